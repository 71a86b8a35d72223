"""sending_domains.last_send_at: the sender's atomic per-domain throttle guard

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sending_domains", sa.Column("last_send_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("sending_domains", "last_send_at")
