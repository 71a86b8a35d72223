"""Indexes for the campaign list: by status and newest first, and a trigram index for name search

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 22:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")  # a trusted extension: the database owner may add it
    op.execute("CREATE INDEX campaigns_name_trgm ON campaigns USING gin (name gin_trgm_ops)")
    op.execute("CREATE INDEX campaigns_listing ON campaigns (workspace_id, status, created_at DESC, id)")


def downgrade() -> None:
    op.execute("DROP INDEX campaigns_listing")
    op.execute("DROP INDEX campaigns_name_trgm")
