"""Sequences (issue 19): a campaign's steps after its first e-mail, a step number on each message, stop rules

The follow-up of a campaign (`followup_enabled`, `followup_days`, `followup_attach_report`) becomes its step 1;
a follow-up message becomes a message of step 1, and `is_followup` is computed from the step.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 02:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | None = "0015"
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
# senders rarely meet on one row. Statement triggers: a plan of 100,000 messages (one COPY) adds one
# statement, not 100,000 updates of the same 16 rows.
SHARD = "('x' || right({id}::text, 1))::bit(4)::int"
REACHED = "n.status = '{status}' AND o.status IS DISTINCT FROM '{status}'"
SKIPPED = "n.last_error LIKE 'skipped: %'"
FIRST = "o.{column} IS NULL AND n.{column} IS NOT NULL"
CHANGES = {
    "planned": "o.id IS NULL",
    "sent": REACHED.format(status="sent"),
    "opened": FIRST.format(column="opened_at"),
    "opened_human": FIRST.format(column="human_opened_at"),
    "replied": FIRST.format(column="replied_at"),
    "clicked": FIRST.format(column="clicked_at"),
    "bounced": REACHED.format(status="bounced"),
    "cancelled": REACHED.format(status="cancelled"),
    "skipped": f"{REACHED.format(status='cancelled')} AND {SKIPPED}",
}
assert tuple(CHANGES) == STEP_COUNTERS


def count_steps(name: str, source: str) -> str:
    """A trigger function adding up the changes of the statement's rows (`source`: new rows `n`, each with
    its old row `o`, all nulls for an insert)."""
    counts = ", ".join(f"count(*) FILTER (WHERE {change})::int AS {c}" for c, change in CHANGES.items())
    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO campaign_step_kpis AS k (campaign_id, step, shard, {", ".join(STEP_COUNTERS)})
  SELECT * FROM (
    SELECT n.campaign_id, n.step, {SHARD.format(id="n.id")} AS shard, {counts}
    FROM {source} GROUP BY 1, 2, 3
  ) AS changed
  WHERE {" + ".join(STEP_COUNTERS)} > 0
  ORDER BY 1, 2, 3
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
    op.add_column("campaigns", sa.Column("steps_edited_at", sa.DateTime(timezone=True), nullable=True))
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
    op.execute(count_steps("count_steps_inserted", "inserted AS n LEFT JOIN (SELECT NULL::uuid AS id,"
               " NULL::text AS status, NULL::timestamptz AS opened_at, NULL::timestamptz AS human_opened_at,"
               " NULL::timestamptz AS replied_at, NULL::timestamptz AS clicked_at) AS o ON false"))
    op.execute(count_steps("count_steps_updated", "updated AS n JOIN previous AS o ON o.id = n.id"))
    op.execute(
        "CREATE TRIGGER messages_count_steps_inserted AFTER INSERT ON messages REFERENCING NEW TABLE AS inserted"
        " FOR EACH STATEMENT EXECUTE FUNCTION count_steps_inserted()"
    )
    op.execute(
        "CREATE TRIGGER messages_count_steps_updated AFTER UPDATE ON messages"
        " REFERENCING OLD TABLE AS previous NEW TABLE AS updated"
        " FOR EACH STATEMENT EXECUTE FUNCTION count_steps_updated()"
    )
    # The messages there are, counted as the triggers would have.
    op.execute(f"""
        INSERT INTO campaign_step_kpis (campaign_id, step, shard, {", ".join(STEP_COUNTERS)})
        SELECT campaign_id, step, {SHARD.format(id="id")}, count(*),
          count(*) FILTER (WHERE EXISTS (
            SELECT FROM message_events AS e WHERE e.message_id = messages.id AND e.kind = 'sent'
          )),
          count(opened_at), count(human_opened_at), count(replied_at), count(clicked_at),
          count(*) FILTER (WHERE status = 'bounced'), count(*) FILTER (WHERE status = 'cancelled'), 0
        FROM messages GROUP BY 1, 2, 3
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER messages_count_steps_updated ON messages")
    op.execute("DROP TRIGGER messages_count_steps_inserted ON messages")
    op.execute("DROP FUNCTION count_steps_updated()")
    op.execute("DROP FUNCTION count_steps_inserted()")
    op.drop_table("campaign_step_kpis")
    op.drop_column("messages", "is_followup")
    op.add_column("messages", sa.Column("is_followup", sa.Boolean(), nullable=True))
    op.execute("UPDATE messages SET is_followup = step > 0")
    op.alter_column("messages", "is_followup", nullable=False)
    op.drop_column("messages", "step")
    for column in STOP_RULES:
        op.drop_column("campaigns", column)
    op.drop_column("campaigns", "steps_edited_at")
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
