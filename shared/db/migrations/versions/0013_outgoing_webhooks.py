"""Outgoing webhooks (issue 20): endpoints, their deliveries and every attempt; the fan-out from the outbox

Revision ID: 0013
Revises: 0010
Create Date: 2026-11-30 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# shared.webhooks.EVENT_TYPES when this was written (a later change of the list is a later migration).
EVENT_TYPES = (
    "message.sent", "message.bounced", "message.opened", "message.clicked", "lead.replied",
    "lead.unsubscribed", "lead.complained", "campaign.started", "campaign.paused", "campaign.completed",
    "domain.paused", "domain.resumed",
)  # fmt: skip
CHANNEL = "maildash_webhooks"

# Every outbox row of a webhook event becomes one delivery per enabled endpoint of its workspace that wants
# it, in the transaction that wrote the event: whatever path writes the outbox (ORM or raw SQL), the
# deliveries commit, or roll back, with the change they announce. The worker is woken by NOTIFY.
FAN_OUT = f"""
CREATE FUNCTION webhook_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO webhook_deliveries (id, endpoint_id, workspace_id, event_id, event_type, payload)
  SELECT gen_random_uuid(), e.id, e.workspace_id, (NEW.payload->>'event_id')::uuid, NEW.routing_key,
    NEW.payload
  FROM webhook_endpoints AS e
  WHERE e.workspace_id = (NEW.payload->>'workspace_id')::uuid AND e.enabled
    AND NEW.routing_key = ANY(e.event_types)
  ON CONFLICT (endpoint_id, event_id) DO NOTHING;
  IF FOUND THEN
    PERFORM pg_notify('{CHANNEL}', '');
  END IF;
  RETURN NULL;
END $$
"""
FAN_OUT_TRIGGER = f"""
CREATE TRIGGER outbox_webhooks AFTER INSERT ON outbox FOR EACH ROW
WHEN (NEW.routing_key IN ({", ".join(f"'{t}'" for t in EVENT_TYPES)}))
EXECUTE FUNCTION webhook_fan_out();
"""


def _uuid() -> postgresql.UUID:  # type: ignore[type-arg]
    return postgresql.UUID(as_uuid=True)


def _workspace() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("workspace_id", _uuid(), sa.ForeignKey("workspaces.id", ondelete="CASCADE"), nullable=False)


def _now(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", _uuid(), primary_key=True),
        _workspace(),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        # The worker that sends to it now, and until when (a crashed worker's lease runs out).
        sa.Column("lease_token", _uuid(), nullable=True),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        _now("created_at"),
        _now("updated_at"),
    )
    op.create_index("ix_webhook_endpoints_workspace_id", "webhook_endpoints", ["workspace_id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", _uuid(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),  # the order per endpoint
        sa.Column(
            "endpoint_id", _uuid(), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        ),
        _workspace(),
        sa.Column("event_id", _uuid(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),  # in a row
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=True),  # of this round
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _now("created_at"),
        sa.UniqueConstraint("endpoint_id", "event_id", name="webhook_deliveries_event_key"),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="webhook_delivery_status_valid"),
    )
    op.create_index(
        "webhook_deliveries_pending",
        "webhook_deliveries",
        ["endpoint_id", "seq"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "seq"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", _uuid(), primary_key=True),
        sa.Column(
            "delivery_id", _uuid(), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "endpoint_id", _uuid(), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        ),
        _workspace(),
        _now("attempted_at"),
        sa.Column("status_code", sa.Integer(), nullable=True),  # null: no answer (refused, timed out …)
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),  # the start of the receiver's answer
    )
    op.create_index("webhook_attempts_endpoint", "webhook_attempts", ["endpoint_id", "attempted_at"])
    op.create_index("webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "attempted_at"])
    op.execute(FAN_OUT)
    op.execute(FAN_OUT_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_webhooks ON outbox")
    op.execute("DROP FUNCTION webhook_fan_out()")
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
