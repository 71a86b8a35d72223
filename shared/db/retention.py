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

WEBHOOK_DELIVERIES = """
DELETE FROM webhook_deliveries WHERE id IN (
  SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2
) RETURNING 1
"""
ESP_EVENTS = """
DELETE FROM esp_events WHERE (workspace_id, provider, event_id) IN (
  SELECT workspace_id, provider, event_id FROM esp_events WHERE received_at < $1 ORDER BY received_at LIMIT $2
) RETURNING 1
"""


async def prune(db: Db, now: datetime, settings: Settings, most: int = 10_000) -> dict[str, int]:
    """Delete at most `most` expired rows of each kind; how many went, by table."""
    webhooks = now - timedelta(days=settings.webhook_retention_days)
    esp = now - timedelta(days=settings.esp_event_retention_days)
    return {
        "webhook_deliveries": len(await db.fetch(WEBHOOK_DELIVERIES, webhooks, most)),
        "esp_events": len(await db.fetch(ESP_EVENTS, esp, most)),
    }
