"""Dry-runs plan with the rules and reservations of a real start, and write nothing."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from services.scheduler.service import Scheduler
from shared.clock import utcnow
from shared.db import create_engine, session_factory
from shared.db.models import Campaign, Lead, Message
from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN, ApiClient

pytestmark = pytest.mark.integration


async def test_wizard_dry_run_matches_what_a_start_then_plans(api: ApiClient, settings: Settings) -> None:
    domains = [f"dry-{i}-{uuid.uuid4().hex[:6]}.example" for i in range(2)]
    for name in domains:
        await api.domain(name, 1025, interval=1200)
    leads = [(await api.lead(f"{uuid.uuid4().hex[:8]}@dry.example"))["id"] for _ in range(4)]
    unsubscribed = await api.lead(f"{uuid.uuid4().hex[:8]}@dry.example")
    template = await api.template()
    engine = create_engine(settings.database_url, pool_size=1)
    sessions = session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            lead_id = uuid.UUID(unsubscribed["id"])
            await session.execute(update(Lead).where(Lead.id == lead_id).values(status="unsubscribed"))
        body: dict[str, Any] = {
            "name": "Dry",
            "template_id": template["id"],
            "audience": {"mode": "static", "lead_ids": [*leads, unsubscribed["id"]]},
            "schedule": {"start_mode": "draft", "window": ALWAYS_OPEN},
            "domains": domains,
            "followup": {"enabled": True, "days": 2},
        }
        async with sessions() as session:
            messages_before = await session.scalar(select(func.count()).select_from(Message))
        reply = await api.http.post("/campaigns/dry-run", json=body)
        assert reply.status_code == 200, reply.text
        plan = reply.json()["data"]
        assert plan["audience_count"] == 4
        assert plan["excluded"]["unsubscribed"] == 1
        assert plan["total_messages"] == 4
        assert plan["followups_expected"] == 4
        assert plan["per_domain"] == {domains[0]: 2, domains[1]: 2}
        assert [s["domain"] for s in plan["slots"]] == [domains[0], domains[1], domains[0], domains[1]]
        async with sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Message)) == messages_before

        # The same payload created and started plans exactly those slots.
        campaign = await api.create("/campaigns", body)
        again = (await api.http.post(f"/campaigns/{campaign['id']}/dry-run")).json()["data"]
        assert again["slots"] == plan["slots"]
        async with sessions() as session, session.begin():
            cid = uuid.UUID(campaign["id"])
            await session.execute(update(Campaign).where(Campaign.id == cid).values(status="scheduled"))
        await Scheduler(sessions, settings, utcnow).start_campaign(uuid.UUID(campaign["id"]))
        async with sessions() as session:
            rows = await session.execute(
                select(Message.lead_id, Message.domain_used, Message.scheduled_at).where(
                    Message.campaign_id == cid
                )
            )
            real = {str(lead): (domain, at) for lead, domain, at in rows}
        for slot in plan["slots"]:
            assert real[slot["lead_id"]] == (slot["domain"], datetime.fromisoformat(slot["scheduled_at"]))

        # Now those slots are taken: a second dry-run on the same domains plans after them.
        later = (await api.http.post("/campaigns/dry-run", json=body)).json()["data"]
        assert datetime.fromisoformat(later["first_send_at"]) > datetime.fromisoformat(plan["last_send_at"])
    finally:
        await engine.dispose()


async def test_a_future_start_at_is_where_planning_begins(api: ApiClient) -> None:
    domain = f"later-{uuid.uuid4().hex[:6]}.example"
    await api.domain(domain, 1025, interval=1200)
    leads = [(await api.lead(f"{uuid.uuid4().hex[:8]}@later.example"))["id"] for _ in range(3)]
    template = await api.template()
    tomorrow = (utcnow() + timedelta(days=1)).replace(hour=10, minute=5, second=0, microsecond=0)
    window = {**ALWAYS_OPEN, "timezone": "UTC"}
    body = {
        "name": "Later",
        "template_id": template["id"],
        "audience": {"mode": "static", "lead_ids": leads},
        "schedule": {"start_mode": "at", "start_at": tomorrow.isoformat(), "window": window},
        "domains": [domain],
    }
    plan = (await api.http.post("/campaigns/dry-run", json=body)).json()["data"]
    starts = [datetime.fromisoformat(s["scheduled_at"]) for s in plan["slots"]]
    # The first grid point (00:00 + k·20 min) at or after 10:05 is 10:20; then one per interval.
    assert starts == [tomorrow.replace(minute=20) + timedelta(minutes=20 * i) for i in range(3)]
    assert plan["per_day"] == [{"date": tomorrow.date().isoformat(), "count": 3}]
