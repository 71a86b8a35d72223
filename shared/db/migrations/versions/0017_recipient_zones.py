"""The lead's own working hours (issue 19): a lead's time zone and country, and a campaign's window mode

`leads.timezone` (an IANA zone) and `leads.country` (ISO 3166 alpha-2) are optional; the api checks them
against the tz database. `campaigns.window_mode` is `campaign` (every lead in the campaign window, as before)
or `recipient` (the campaign's hours in each lead's zone, its country's holidays: `shared.planning.zones`).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, or with a constant default: adding them rewrites no table (PostgreSQL 11+).
    op.add_column("leads", sa.Column("timezone", sa.Text(), nullable=True))
    op.add_column("leads", sa.Column("country", sa.String(2), nullable=True))
    op.add_column(
        "campaigns",
        sa.Column("window_mode", sa.String(16), nullable=False, server_default=sa.text("'campaign'")),
    )
    op.create_check_constraint(
        "window_mode_valid", "campaigns", "window_mode IN ('campaign', 'recipient')"
    )


def downgrade() -> None:
    op.drop_constraint("window_mode_valid", "campaigns", type_="check")
    op.drop_column("campaigns", "window_mode")
    op.drop_column("leads", "country")
    op.drop_column("leads", "timezone")
