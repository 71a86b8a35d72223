"""Sequences (issue 19): a campaign's steps after its first e-mail, a step number on each message, stop rules

The follow-up of a campaign (`followup_enabled`, `followup_days`, `followup_attach_report`) becomes its step 1;
a follow-up message becomes a message of step 1, and `is_followup` is computed from the step.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-01 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
# Chained onto 0013 on this branch; re-chain onto 0014 when both are merged.
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STOP_RULES = ("stop_on_auto_reply", "stop_on_click", "stop_on_company_reply")


def upgrade() -> None:
    op.create_table(
        "campaign_steps",
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("template_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("delay_days", sa.Integer(), nullable=False),
        sa.Column("attach_report", sa.Boolean(), nullable=False),
        sa.Column("condition", sa.String(length=16), nullable=False),
        sa.CheckConstraint("position >= 1", name="step_position_positive"),
        sa.CheckConstraint("condition IN ('always', 'not_opened', 'not_clicked')", name="condition_valid"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["template_id"], ["templates.id"]),
        sa.PrimaryKeyConstraint("campaign_id", "position"),
    )
    op.create_index("campaign_steps_template", "campaign_steps", ["template_id"])
    op.execute(
        "INSERT INTO campaign_steps (campaign_id, position, template_id, delay_days, attach_report, condition)"
        " SELECT id, 1, template_id, followup_days, followup_attach_report, 'always' FROM campaigns"
        " WHERE followup_enabled"
    )
    for column in ("followup_enabled", "followup_days", "followup_attach_report"):
        op.drop_column("campaigns", column)
    for column in STOP_RULES:
        op.add_column(
            "campaigns", sa.Column(column, sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
    op.add_column("messages", sa.Column("step", sa.SmallInteger(), server_default=sa.text("0"), nullable=False))
    op.execute("UPDATE messages SET step = 1 WHERE is_followup")
    op.drop_column("messages", "is_followup")
    op.add_column(
        "messages",
        sa.Column("is_followup", sa.Boolean(), sa.Computed("step > 0", persisted=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("messages", "is_followup")
    op.add_column("messages", sa.Column("is_followup", sa.Boolean(), nullable=True))
    op.execute("UPDATE messages SET is_followup = step > 0")
    op.alter_column("messages", "is_followup", nullable=False)
    op.drop_column("messages", "step")
    for column in STOP_RULES:
        op.drop_column("campaigns", column)
    op.add_column("campaigns", sa.Column("followup_enabled", sa.Boolean(), nullable=True))
    op.add_column("campaigns", sa.Column("followup_days", sa.Integer(), nullable=True))
    op.add_column("campaigns", sa.Column("followup_attach_report", sa.Boolean(), nullable=True))
    op.execute(
        "UPDATE campaigns AS c SET followup_enabled = s.campaign_id IS NOT NULL,"
        " followup_days = coalesce(s.delay_days, 3), followup_attach_report = coalesce(s.attach_report, false)"
        " FROM campaigns AS c2 LEFT JOIN campaign_steps AS s ON s.campaign_id = c2.id AND s.position = 1"
        " WHERE c2.id = c.id"
    )
    for column in ("followup_enabled", "followup_days", "followup_attach_report"):
        op.alter_column("campaigns", column, nullable=False)
    op.drop_index("campaign_steps_template", table_name="campaign_steps")
    op.drop_table("campaign_steps")
