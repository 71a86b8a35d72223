"""Traces (issue 20): the W3C trace context an outbox row was written in, and the one a campaign was planned in

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable without default: adding them rewrites no table, and they stay null while tracing is off.
    op.add_column("outbox", sa.Column("trace_context", postgresql.JSONB(), nullable=True))
    op.add_column("campaigns", sa.Column("trace_context", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("campaigns", "trace_context")
    op.drop_column("outbox", "trace_context")
