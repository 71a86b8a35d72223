"""`make demo`: run twice on a fresh database, it leaves one sample whose KPIs, served by the api, are what
the messages' history says."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.api.main import create_app as create_api
from shared.db import asyncpg_dsn
from shared.db.migrate import drop_database, upgrade
from shared.messaging import remove_topology
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service
from tools.demo import fill

pytestmark = pytest.mark.integration

COUNTED = ("leads", "sending_domains", "templates", "campaigns", "messages", "message_events", "outbox")


@pytest.fixture
async def demo_settings(settings: Settings) -> AsyncIterator[Settings]:
    """A database of its own, and broker names of its own (the api's relay publishes the demo's events)."""
    own = {"database_url": f"{settings.database_url}_demo", "broker_prefix": f"{settings.broker_prefix}-demo"}
    fresh = settings.model_copy(update=own)
    await asyncio.to_thread(upgrade, fresh.database_url)
    try:
        yield fresh
    finally:
        await remove_topology(fresh.amqp_url, fresh.broker_prefix)
        await drop_database(fresh.database_url)


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    return {table: await db.fetchval(f"SELECT count(*) FROM {table}") for table in COUNTED}  # noqa: S608


async def history(db: asyncpg.Connection, campaign_id: str) -> dict[str, Any]:
    """What the campaign's message events say happened."""
    rows = await db.fetch(
        "SELECT kind, message_id, occurred_at FROM message_events WHERE campaign_id = $1", campaign_id
    )
    messages = {kind: {r["message_id"] for r in rows if r["kind"] == kind} for kind in ("opened", "clicked")}
    amsterdam = ZoneInfo("Europe/Amsterdam")
    return {
        "sent": sum(r["kind"] == "sent" for r in rows),
        "bounced": sum(r["kind"] == "bounced" for r in rows),
        "opened": len(messages["opened"]),
        "clicked": len(messages["clicked"]),
        "replied": sum(r["kind"] == "replied" for r in rows),
        "sent_per_day": Counter(
            r["occurred_at"].astimezone(amsterdam).date() for r in rows if r["kind"] == "sent"
        ),
    }


async def test_the_demo_fills_a_workspace_once_with_the_kpis_its_history_says(
    demo_settings: Settings,
) -> None:
    first = await fill(demo_settings)
    assert "200 leads" in first
    db = await asyncpg.connect(asyncpg_dsn(demo_settings.database_url))
    try:
        after_first = await counts(db)
        assert await fill(demo_settings) == []  # the second run finds it all there
        assert await counts(db) == after_first
        assert after_first["leads"] == 200
        assert after_first["sending_domains"] == 3

        async with (
            inprocess_service(create_api, demo_settings, free_port()) as url,
            ApiClient(url) as api,
        ):
            await api.login(demo_settings.admin_email, demo_settings.admin_password)
            listed = (await api.get("/campaigns?page_size=100"))["items"]
            assert {c["status"] for c in listed} == {
                "draft", "scheduled", "running", "paused", "completed", "stopped"
            }  # fmt: skip
            details = [await api.get(f"/campaigns/{c['id']}") for c in listed]
            told = {c["id"]: await history(db, c["id"]) for c in listed}
    finally:
        await db.close()

    for campaign in details:
        kpis, said = campaign["kpis"], told[campaign["id"]]
        served = {name: kpis[f"total_{name}"] for name in ("sent", "bounced", "opened", "clicked", "replied")}
        assert served == {name: said[name] for name in served}, campaign["name"]
        sent_per_day = {date.fromisoformat(p["date"]): p["sent"] for p in campaign["timeline"] if p["sent"]}
        assert sent_per_day == dict(said["sent_per_day"]), campaign["name"]
    by_status = {c["status"]: c["kpis"] for c in details}
    assert by_status["completed"]["total_sent"] > 40  # its 40 leads, and the follow-ups
    assert by_status["completed"]["total_opened"] > 0
    assert by_status["completed"]["total_replied"] > 0
    assert sum(kpis["total_bounced"] for kpis in by_status.values()) > 0
    assert 0 < by_status["paused"]["total_sent"] < by_status["paused"]["total_planned"]
    assert by_status["stopped"]["total_cancelled"] > 0
    assert by_status["running"]["total_sent"] > 0
    assert (by_status["scheduled"]["total_sent"], by_status["draft"]["total_planned"]) == (0, 0)
