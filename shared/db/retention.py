"""What is kept only for a while, then deleted by the scheduler's reconcile beat, oldest first, a bounded
batch at a time (through the indexes of migration 0019):
- a webhook delivery that was delivered or given up (with its attempts), `webhook_retention_days` after its
  event; a pending one is kept while it is retried;
- an ESP event's id, `esp_event_retention_days` after it came: long enough that the ESP delivering it again
  still changes nothing.
Every other table is either bounded by what it describes or pruned by its owner (`domain_health.prune`, the
outbox as it is relayed, expired OAuth2 connections as new ones start)."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.db.message_store import Db
from shared.settings import Settings

BATCH = 10_000  # rows of each kind per beat: a beat stays short, a backlog goes in a few minutes

# The rows are locked as they are chosen, skipping any another transaction holds, and the condition is the
# outer statement's too: a delivery that a redelivery made pending again meanwhile is kept.
WEBHOOK_DELIVERIES = """
WITH gone AS (
  DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1 AND id IN (
    SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1
    ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED
  ) RETURNING 1
)
SELECT count(*) FROM gone
"""
ESP_EVENTS = """
WITH gone AS (
  DELETE FROM esp_events WHERE received_at < $1 AND (workspace_id, provider, event_id) IN (
    SELECT workspace_id, provider, event_id FROM esp_events WHERE received_at < $1
    ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED
  ) RETURNING 1
)
SELECT count(*) FROM gone
"""


async def prune(db: Db, now: datetime, settings: Settings, most: int = BATCH) -> dict[str, int]:
    """Delete at most `most` expired rows of each kind; how many went, by table."""
    webhooks = now - timedelta(days=settings.webhook_retention_days)
    esp = now - timedelta(days=settings.esp_event_retention_days)
    [deliveries] = await db.fetch(WEBHOOK_DELIVERIES, webhooks, most)
    [events] = await db.fetch(ESP_EVENTS, esp, most)
    return {"webhook_deliveries": deliveries["count"], "esp_events": events["count"]}
