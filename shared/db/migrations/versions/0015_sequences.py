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
STEP_COUNTERS = (
    "planned", "sent", "opened", "opened_human", "replied", "clicked", "bounced", "cancelled", "skipped",
)  # fmt: skip

# Each step's figures, kept by the database as its messages change, whatever writes them: a new row counts
# as planned (and as whatever it already is), a status reached counts once (`sent` is an SMTP acceptance, as
# the campaign's counter: a later DSN bounce leaves it), a first open, human open, reply or click once.
# Spread over the campaign counters' 16 shards by message id (`shared.db.kpi.shard_of`), so concurrent
# senders rarely meet on one row.
COUNT_STEP = f"""
CREATE FUNCTION count_step() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  was_status text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
  was_opened boolean := TG_OP = 'UPDATE' AND OLD.opened_at IS NOT NULL;
  was_human boolean := TG_OP = 'UPDATE' AND OLD.human_opened_at IS NOT NULL;
  was_replied boolean := TG_OP = 'UPDATE' AND OLD.replied_at IS NOT NULL;
  was_clicked boolean := TG_OP = 'UPDATE' AND OLD.clicked_at IS NOT NULL;
  reached boolean := NEW.status IS DISTINCT FROM was_status;
  d int[] := ARRAY[
    (TG_OP = 'INSERT')::int,
    (reached AND NEW.status = 'sent')::int,
    (NOT was_opened AND NEW.opened_at IS NOT NULL)::int,
    (NOT was_human AND NEW.human_opened_at IS NOT NULL)::int,
    (NOT was_replied AND NEW.replied_at IS NOT NULL)::int,
    (NOT was_clicked AND NEW.clicked_at IS NOT NULL)::int,
    (reached AND NEW.status = 'bounced')::int,
    (reached AND NEW.status = 'cancelled')::int,
    (reached AND NEW.status = 'cancelled' AND coalesce(NEW.last_error LIKE 'skipped: %', false))::int
  ];
BEGIN
  IF d = ARRAY[0, 0, 0, 0, 0, 0, 0, 0, 0] THEN
    RETURN NULL;
  END IF;
  INSERT INTO campaign_step_kpis AS k (campaign_id, step, shard, {", ".join(STEP_COUNTERS)})
  VALUES (NEW.campaign_id, NEW.step, ('x' || right(NEW.id::text, 1))::bit(4)::int,
          {", ".join(f"d[{i}]" for i in range(1, len(STEP_COUNTERS) + 1))})
  ON CONFLICT (campaign_id, step, shard) DO UPDATE SET
    {", ".join(f"{c} = k.{c} + excluded.{c}" for c in STEP_COUNTERS)};
  RETURN NULL;
END
$$
"""


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
    op.create_table(
        "campaign_step_kpis",
        sa.Column("campaign_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("step", sa.SmallInteger(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        *(sa.Column(c, sa.Integer(), server_default=sa.text("0"), nullable=False) for c in STEP_COUNTERS),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "step", "shard"),
    )
    op.execute(COUNT_STEP)
    op.execute(
        "CREATE TRIGGER messages_count_step AFTER INSERT OR UPDATE OF status, opened_at, human_opened_at,"
        " replied_at, clicked_at ON messages FOR EACH ROW EXECUTE FUNCTION count_step()"
    )
    # The messages there are, counted as the trigger would have.
    op.execute(f"""
        INSERT INTO campaign_step_kpis (campaign_id, step, shard, {", ".join(STEP_COUNTERS)})
        SELECT campaign_id, step, ('x' || right(id::text, 1))::bit(4)::int, count(*),
          count(*) FILTER (WHERE EXISTS (
            SELECT FROM message_events AS e WHERE e.message_id = messages.id AND e.kind = 'sent'
          )),
          count(opened_at), count(human_opened_at), count(replied_at), count(clicked_at),
          count(*) FILTER (WHERE status = 'bounced'), count(*) FILTER (WHERE status = 'cancelled'), 0
        FROM messages GROUP BY 1, 2, 3
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER messages_count_step ON messages")
    op.execute("DROP FUNCTION count_step()")
    op.drop_table("campaign_step_kpis")
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
