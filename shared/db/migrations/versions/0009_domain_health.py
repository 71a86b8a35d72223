"""Domain health: sending_domains.state (active | paused, with cause, reason and time), its thresholds and
probe; the running totals (domain_health) and their log (domain_signals) the figures are read from; a
workspace's own thresholds (workspace_settings); campaigns.reassign_on_domain_pause

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in shared.reputation at this revision (a migration does not follow later changes of the code).
STATES = ("active", "paused")
CAUSES = ("hard_bounces", "complaints", "policy_rejections", "authentication_failures", "connection_failures")
SEND_SIGNALS = ("hard_bounce", "sent")
EMPTY = sa.text("'{}'::jsonb")
ZERO = sa.text("0")


def _listed(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def _total(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default=ZERO)


def _domain() -> sa.Column[object]:
    return sa.Column(
        "sending_domain_id",
        UUID(as_uuid=True),
        sa.ForeignKey("sending_domains.id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    op.add_column("sending_domains", sa.Column("state", sa.String(16), nullable=False, server_default="active"))
    op.add_column("sending_domains", sa.Column("paused_cause", sa.String(32), nullable=True))
    op.add_column("sending_domains", sa.Column("paused_reason", sa.Text(), nullable=True))
    op.add_column("sending_domains", sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("sending_domains", sa.Column("probe_message_id", UUID(as_uuid=True), nullable=True))
    op.add_column(
        "sending_domains", sa.Column("health_thresholds", JSONB(), nullable=False, server_default=EMPTY)
    )
    op.create_check_constraint("state_valid", "sending_domains", f"state IN ({_listed(STATES)})")
    op.create_check_constraint("paused_cause_valid", "sending_domains", f"paused_cause IN ({_listed(CAUSES)})")
    op.create_check_constraint(
        "paused_since",
        "sending_domains",
        "(state = 'paused') = (paused_at IS NOT NULL AND paused_cause IS NOT NULL)",
    )
    op.add_column(
        "campaigns",
        sa.Column("reassign_on_domain_pause", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.create_table(
        "domain_health",
        _domain(),
        _total("signals"),
        _total("sends"),
        _total("hard_bounces"),
        _total("complaints"),
        _total("policy_rejections"),
        sa.Column("consecutive_connection_failures", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("consecutive_authentication_failures", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("counting_since", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "domain_signals",
        _domain(),
        sa.Column("seq", sa.BigInteger(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signal", sa.String(32), nullable=False),
        sa.Column("sends", sa.BigInteger(), nullable=False),
        sa.Column("hard_bounces", sa.BigInteger(), nullable=False),
        sa.Column("complaints", sa.BigInteger(), nullable=False),
        sa.Column("policy_rejections", sa.BigInteger(), nullable=False),
    )
    op.create_index("domain_signals_at", "domain_signals", ["sending_domain_id", "at", "seq"])
    op.create_index(
        "domain_signals_sends",
        "domain_signals",
        ["sending_domain_id", "sends"],
        postgresql_where=sa.text(f"signal IN ({_listed(SEND_SIGNALS)})"),
    )
    op.create_table(
        "workspace_settings",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "workspace_id",
            UUID(as_uuid=True),
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("health_thresholds", JSONB(), nullable=False, server_default=EMPTY),
    )


def downgrade() -> None:
    op.drop_table("workspace_settings")
    op.drop_table("domain_signals")
    op.drop_table("domain_health")
    op.drop_column("campaigns", "reassign_on_domain_pause")
    for constraint in ("paused_since", "paused_cause_valid", "state_valid"):
        op.drop_constraint(constraint, "sending_domains", type_="check")
    for column in ("health_thresholds", "probe_message_id", "paused_at", "paused_reason", "paused_cause", "state"):
        op.drop_column("sending_domains", column)
