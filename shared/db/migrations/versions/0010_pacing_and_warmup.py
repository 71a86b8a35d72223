"""Adaptive pacing per receiving provider and warm-up (issue 18): recipient_providers (the provider of each
recipient domain, from its MX, cached by TTL), provider_paces (a sending domain's slower pace towards one
provider) and a sending domain's warm-up plan

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WARMUP = ("warmup_start_per_day", "warmup_growth_percent", "warmup_max_per_day", "warmup_start_date")


def _uuid() -> postgresql.UUID:  # type: ignore[type-arg]
    return postgresql.UUID(as_uuid=True)


def upgrade() -> None:
    for column in WARMUP:
        kind = sa.Date() if column == "warmup_start_date" else sa.Integer()
        op.add_column("sending_domains", sa.Column(column, kind, nullable=True))
    # A plan is whole or absent; it starts at one e-mail a day at least and never shrinks.
    op.create_check_constraint(
        "warmup_complete", "sending_domains", " AND ".join(f"({c} IS NULL) = ({WARMUP[0]} IS NULL)" for c in WARMUP)
    )
    op.create_check_constraint(
        "warmup_valid",
        "sending_domains",
        "warmup_start_per_day >= 1 AND warmup_max_per_day >= warmup_start_per_day"
        " AND warmup_growth_percent BETWEEN 0 AND 1000",
    )

    op.create_table(
        "recipient_providers",
        sa.Column("domain", sa.Text(), primary_key=True),
        sa.Column("provider", sa.Text(), nullable=True),  # null: not resolved yet (the domain stands in)
        sa.Column("wanted", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index(
        "recipient_providers_due", "recipient_providers", ["expires_at"], postgresql_where=sa.text("wanted")
    )

    op.create_table(
        "provider_paces",
        sa.Column(
            "sending_domain_id",
            _uuid(),
            sa.ForeignKey("sending_domains.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("provider", sa.Text(), primary_key=True),
        sa.Column(
            "workspace_id", _uuid(), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("slowed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deferrals", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint("interval_seconds > 0", name="pace_interval_positive"),
    )
    op.create_index("ix_provider_paces_workspace_id", "provider_paces", ["workspace_id"])


def downgrade() -> None:
    op.drop_table("provider_paces")
    op.drop_table("recipient_providers")
    op.drop_constraint("warmup_valid", "sending_domains", type_="check")
    op.drop_constraint("warmup_complete", "sending_domains", type_="check")
    for column in reversed(WARMUP):
        op.drop_column("sending_domains", column)
