"""The per-domain throttle holds in PostgreSQL itself, also when two schedulers plan at the same moment."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from services.scheduler.service import Scheduler
from shared.clock import utcnow
from shared.db import create_engine, session_factory
from shared.db.models import Campaign, Message
from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN, ApiClient
from tests.support.stack import subprocess_service, with_ports

pytestmark = pytest.mark.integration


async def draft_campaign(api: ApiClient, template_id: str, domains: list[str], leads: int) -> str:
    lead_ids = [(await api.lead(f"{uuid.uuid4().hex[:10]}@race.example"))["id"] for _ in range(leads)]
    draft = {"start_mode": "draft", "window": ALWAYS_OPEN}
    return str((await api.campaign(template_id, lead_ids, domains, schedule=draft))["id"])


async def test_two_schedulers_planning_two_campaigns_on_shared_domains_never_overlap(
    api: ApiClient, settings: Settings
) -> None:
    domains = [f"race-{i}-{uuid.uuid4().hex[:6]}.example" for i in range(3)]
    for name in domains:
        await api.domain(name, 1025, interval=600)
    template = await api.template()
    campaigns = [await draft_campaign(api, template["id"], domains, 30) for _ in range(2)]

    engines = [create_engine(settings.database_url, pool_size=2) for _ in range(2)]
    try:
        async with session_factory(engines[0])() as session, session.begin():
            ids = [uuid.UUID(c) for c in campaigns]
            await session.execute(update(Campaign).where(Campaign.id.in_(ids)).values(status="scheduled"))
        schedulers = [Scheduler(session_factory(e), settings, utcnow) for e in engines]
        planned = await asyncio.gather(
            *(s.start_campaign(uuid.UUID(c)) for s, c in zip(schedulers, campaigns, strict=True))
        )
        assert planned == [30, 30]

        async with session_factory(engines[0])() as session:
            rows = (
                await session.execute(
                    select(Message.domain_used, Message.scheduled_at).where(Message.campaign_id.in_(ids))
                )
            ).all()
    finally:
        for engine in engines:
            await engine.dispose()
    assert len(rows) == 60
    for name in domains:
        slots = sorted(at for domain, at in rows if domain == name)
        assert len(slots) == 20
        assert all(b - a >= timedelta(seconds=600) for a, b in pairwise(slots))


async def test_the_database_refuses_an_overlapping_slot_on_one_domain(
    api: ApiClient, settings: Settings
) -> None:
    name = f"guard-{uuid.uuid4().hex[:6]}.example"
    await api.domain(name, 1025, interval=1200)
    template = await api.template()
    campaign = await draft_campaign(api, template["id"], [name], 1)
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            await session.execute(
                update(Campaign).where(Campaign.id == uuid.UUID(campaign)).values(status="scheduled")
            )
        assert await Scheduler(sessions, settings, utcnow).start_campaign(uuid.UUID(campaign)) == 1
        async with sessions() as session:
            first = (
                await session.scalars(select(Message).where(Message.campaign_id == uuid.UUID(campaign)))
            ).one()
            ten_minutes_later = first.scheduled_at + timedelta(minutes=10)
            twin = Message(
                workspace_id=first.workspace_id,
                campaign_id=first.campaign_id,
                lead_id=first.lead_id,
                sending_domain_id=first.sending_domain_id,
                domain_used=first.domain_used,
                scheduled_at=ten_minutes_later,
                slot_ends_at=ten_minutes_later + timedelta(minutes=20),
                not_before=ten_minutes_later,
            )
            session.add(twin)
            with pytest.raises(IntegrityError, match="messages_domain_throttle"):
                await session.commit()
    finally:
        await engine.dispose()


async def test_two_scheduler_processes_share_the_work_and_never_overlap(
    api: ApiClient, settings: Settings, tmp_path: Path
) -> None:
    domains = [f"procs-{i}-{uuid.uuid4().hex[:6]}.example" for i in range(2)]
    for name in domains:
        await api.domain(name, 1025, interval=300)
    template = await api.template()
    logged = settings.model_copy(update={"log_format": "json"})
    async with (
        subprocess_service("scheduler", with_ports(logged, "scheduler"), tmp_path) as first,
        subprocess_service("scheduler", with_ports(logged, "scheduler"), tmp_path) as second,
    ):
        campaigns = []
        for _ in range(4):  # started back to back: competing consumers plan them at the same moment
            leads = [(await api.lead(f"{uuid.uuid4().hex[:10]}@procs.example"))["id"] for _ in range(20)]
            campaigns.append((await api.campaign(template["id"], leads, domains))["id"])
        ids = [uuid.UUID(c) for c in campaigns]
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            for _ in range(200):
                async with session_factory(engine)() as session:
                    rows = (
                        await session.execute(
                            select(Message.domain_used, Message.scheduled_at).where(
                                Message.campaign_id.in_(ids)
                            )
                        )
                    ).all()
                if len(rows) == 80:
                    break
                await asyncio.sleep(0.1)
        finally:
            await engine.dispose()
        planned_by = [
            {event["campaign_id"] for event in scheduler.logged("scheduler.campaign.planned")}
            & set(campaigns)
            for scheduler in (first, second)
        ]
    assert all(planned_by), f"one scheduler planned every campaign, there was no race: {planned_by}"
    assert len(rows) == 80
    for name in domains:
        slots = sorted(at for domain, at in rows if domain == name)
        assert all(b - a >= timedelta(seconds=300) for a, b in pairwise(slots))
