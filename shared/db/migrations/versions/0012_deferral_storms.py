"""A storm of deferrals pauses a sending domain (issue 18): its run of 421 / 4.7.x answers in a row, and the
cause `deferrals`, transient like connection failures. And the latest time a domain's signal was logged at,
so that signals are logged in time order

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-30 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CAUSES = ("hard_bounces", "complaints", "policy_rejections", "authentication_failures", "connection_failures")


def _check(causes: Sequence[str]) -> None:
    op.drop_constraint("paused_cause_valid", "sending_domains", type_="check")
    listed = ", ".join(f"'{cause}'" for cause in causes)
    op.create_check_constraint("paused_cause_valid", "sending_domains", f"paused_cause IN ({listed})")


def upgrade() -> None:
    op.add_column(
        "domain_health",
        sa.Column("consecutive_deferrals", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column("domain_health", sa.Column("last_signal_at", sa.DateTime(timezone=True), nullable=True))
    _check((*CAUSES, "deferrals"))


def downgrade() -> None:
    # A domain a storm paused stays paused under the other transient cause: its probe resumes it the same way.
    op.execute("UPDATE sending_domains SET paused_cause = 'connection_failures' WHERE paused_cause = 'deferrals'")
    _check(CAUSES)
    op.drop_column("domain_health", "last_signal_at")
    op.drop_column("domain_health", "consecutive_deferrals")
