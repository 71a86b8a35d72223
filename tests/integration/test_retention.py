"""What is kept only for a while (`shared/db/retention.py`): the scheduler's reconcile beat deletes finished
webhook deliveries (with their attempts) and ESP event ids once they are older than their retention, and
keeps the newer ones and a delivery still being retried, however old."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta

import asyncpg
import pytest

from services.scheduler.service import Scheduler
from shared.clock import utcnow
from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.settings import Settings

pytestmark = pytest.mark.integration


async def an_endpoint(db: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    """A workspace and a disabled endpoint of it (no worker sends its deliveries)."""
    workspace, endpoint = uuid.uuid4(), uuid.uuid4()
    await db.execute("INSERT INTO workspaces (id, name) VALUES ($1, $2)", workspace, workspace.hex)
    await db.execute(
        "INSERT INTO webhook_endpoints (id, workspace_id, url, event_types, secret_encrypted, enabled)"
        " VALUES ($1, $2, 'https://hooks.example/in', '{}', 'x', false)",
        endpoint,
        workspace,
    )
    return workspace, endpoint


async def reconcile(settings: Settings, now: datetime) -> None:
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        await Scheduler(session_factory(engine), settings, lambda: now).reconcile()
    finally:
        await engine.dispose()


async def test_the_reconcile_beat_deletes_what_is_past_its_retention_and_keeps_the_rest(
    settings: Settings,
) -> None:
    now = utcnow()
    days = timedelta(days=1)
    db = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    workspace, endpoint = await an_endpoint(db)
    try:
        deliveries = {
            ("delivered", 31): False,  # (status, days old): kept?
            ("failed", 31): False,
            ("pending", 31): True,  # still retried
            ("delivered", 29): True,
            ("failed", 1): True,
        }
        ids = {}
        for (status, age), _ in deliveries.items():
            ids[status, age] = delivery = uuid.uuid4()
            await db.execute(
                "INSERT INTO webhook_deliveries (id, endpoint_id, workspace_id, event_id, event_type,"
                " payload, status, created_at) VALUES ($1, $2, $3, $4, 'message.sent', $5::jsonb, $6, $7)",
                delivery, endpoint, workspace, uuid.uuid4(), json.dumps({}), status, now - age * days,
            )  # fmt: skip
            await db.execute(
                "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, workspace_id, status_code,"
                " succeeded, duration_ms, attempted_at) VALUES ($1, $2, $3, $4, 500, false, 3, $5)",
                uuid.uuid4(), delivery, endpoint, workspace, now - age * days,
            )  # fmt: skip
        esp = {"old": 31, "new": 29}
        for event_id, age in esp.items():
            await db.execute(
                "INSERT INTO esp_events (workspace_id, provider, event_id, outcome, received_at)"
                " VALUES ($1, 'sendgrid', $2, 'recorded', $3)",
                workspace, event_id, now - age * days,
            )  # fmt: skip

        await reconcile(settings, now)

        left = {
            row["id"]
            for row in await db.fetch("SELECT id FROM webhook_deliveries WHERE endpoint_id = $1", endpoint)
        }
        assert {key for key, id_ in ids.items() if id_ in left} == {
            k for k, kept in deliveries.items() if kept
        }
        attempts = await db.fetchval("SELECT count(*) FROM webhook_attempts WHERE endpoint_id = $1", endpoint)
        assert attempts == len(left)  # a deleted delivery's attempts went with it
        kept_events = await db.fetch("SELECT event_id FROM esp_events WHERE workspace_id = $1", workspace)
        assert [row["event_id"] for row in kept_events] == ["new"]
    finally:
        await db.execute("DELETE FROM workspaces WHERE id = $1", workspace)
        await db.close()


async def test_a_delivery_made_pending_again_while_it_is_pruned_is_kept(settings: Settings) -> None:
    """A redelivery of an expired delivery, not yet committed when the prune comes: the prune passes it by,
    and the delivery is there, pending, once the redelivery commits."""
    now = utcnow()
    delivery = uuid.uuid4()
    redeliverer = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    workspace, endpoint = await an_endpoint(redeliverer)
    try:
        await redeliverer.execute(
            "INSERT INTO webhook_deliveries (id, endpoint_id, workspace_id, event_id, event_type, payload,"
            " status, created_at) VALUES ($1, $2, $3, $4, 'message.sent', '{}', 'delivered', $5)",
            delivery, endpoint, workspace, uuid.uuid4(), now - timedelta(days=40),
        )  # fmt: skip
        redelivery = redeliverer.transaction()
        await redelivery.start()
        await redeliverer.execute("UPDATE webhook_deliveries SET status = 'pending' WHERE id = $1", delivery)
        pruning = asyncio.create_task(reconcile(settings, now))
        await asyncio.wait({pruning}, timeout=2)  # a prune that waited for the row would still be waiting
        await redelivery.commit()
        await pruning
        status = await redeliverer.fetchval("SELECT status FROM webhook_deliveries WHERE id = $1", delivery)
        assert status == "pending"
    finally:
        await redeliverer.execute("DELETE FROM workspaces WHERE id = $1", workspace)
        await redeliverer.close()
