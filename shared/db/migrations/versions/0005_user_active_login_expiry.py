"""users.active, checked on every request; an index on login_failures.at so expired failures are deleted cheaply

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.create_index("login_failures_at", "login_failures", ["at"])


def downgrade() -> None:
    op.drop_index("login_failures_at", table_name="login_failures")
    op.drop_column("users", "active")
