"""Open hits: from several tracker processes at once, and across a shutdown, every hit that got its GIF is
recorded, and the first open is counted once."""

from __future__ import annotations

import asyncio
import signal
import uuid
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracker.opens import APPLICATION_NAME
from shared.db import create_engine, session_factory
from shared.db.models import CampaignKpi, Message, MessageEventRow
from shared.settings import Settings
from tests.support.pipeline import Pipeline
from tests.support.samples import pixel_of
from tests.support.stack import subprocess_service, with_ports
from tests.support.truth import kpi_days

pytestmark = pytest.mark.integration

PROCESSES, HITS = 3, 60
CLIENTS, HITS_PER_CLIENT = 32, 500


async def open_events(sessions: async_sessionmaker[AsyncSession], message_id: str | uuid.UUID) -> int:
    """How many open hits of the message are recorded, read from the events."""
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .where(MessageEventRow.message_id == uuid.UUID(str(message_id)))
            .where(MessageEventRow.kind == "opened")
        )
    return int(count or 0)


async def test_concurrent_first_opens_from_several_trackers_count_once(
    pipeline: Pipeline, settings: Settings, tmp_path: Path
) -> None:
    campaign, _ = await pipeline.campaign()
    mail = (await pipeline.sink.wait_for(len(pipeline.sink.received) + 1))[-1]
    [message] = await pipeline.messages(campaign["id"])
    engine = create_engine(settings.database_url, pool_size=1)
    sessions = session_factory(engine)
    try:
        async with sessions() as session, session.begin():  # sent an hour ago: these are people, not scanners
            await session.execute(
                update(Message)
                .where(Message.id == uuid.UUID(message["id"]))
                .values(sent_at=func.now() - func.make_interval(0, 0, 0, 0, 1))
            )
        async with AsyncExitStack() as stack:
            trackers = [
                await stack.enter_async_context(
                    subprocess_service("tracker", with_ports(settings, "tracker"), tmp_path)
                )
                for _ in range(PROCESSES)
            ]
            pixel = pixel_of(mail)
            async with httpx.AsyncClient() as client:
                replies = await asyncio.gather(
                    *(
                        client.get(
                            f"{trackers[i % PROCESSES].url}{pixel}", headers={"User-Agent": "Mozilla/5.0"}
                        )
                        for i in range(HITS)
                    )
                )
        assert {r.status_code for r in replies} == {200}
        events = await open_events(sessions, message["id"])
        async with sessions() as session:
            hits_counted = await session.scalar(
                select(func.sum(CampaignKpi.opens_total)).where(
                    CampaignKpi.campaign_id == uuid.UUID(campaign["id"])
                )
            )
    finally:
        await engine.dispose()
    kpis = (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["kpis"]
    assert events == HITS  # every hit is an event, committed before its GIF went out
    assert hits_counted == HITS  # and counted, the repeats of a message opened before too
    assert (kpis["total_opened"], kpis["total_opened_human"]) == (1, 1)


async def test_the_open_writer_reconnects_after_losing_its_database_connection(
    pipeline: Pipeline, settings: Settings
) -> None:
    campaign, _ = await pipeline.campaign()
    mail = (await pipeline.sink.wait_for(len(pipeline.sink.received) + 1))[-1]
    [message] = await pipeline.messages(campaign["id"])
    pixel = f"{pipeline.tracker_url}{pixel_of(mail)}"
    engine = create_engine(settings.database_url, pool_size=1)
    sessions = session_factory(engine)

    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(pixel)).status_code == 200
            assert await open_events(sessions, message["id"]) == 1
            async with sessions() as session:
                cut = await session.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = :name AND datname = current_database()"
                    ),
                    {"name": APPLICATION_NAME},
                )
            assert cut >= 1
            await asyncio.sleep(0.5)  # the server has closed the connection; the writer sees it closed
            replies = [(await client.get(pixel)).status_code for _ in range(3)]
            assert replies == [200] * 3
            # The writer reconnected: no hit was lost.
            assert await open_events(sessions, message["id"]) == 1 + 3
    finally:
        await engine.dispose()


async def test_an_open_right_after_the_send_is_a_machine_one_and_a_later_one_is_human(
    pipeline: Pipeline, settings: Settings
) -> None:
    """The first hit is the first open whoever made it; the first human hit is counted on its own. A hit
    within 10 s of the send is a machine whatever its client; an hour later the same browser is a person."""
    campaign, _ = await pipeline.campaign()
    mail = (await pipeline.sink.wait_for(len(pipeline.sink.received) + 1))[-1]
    [message] = await pipeline.messages(campaign["id"])
    pixel = f"{pipeline.tracker_url}{pixel_of(mail)}"
    browser = {"User-Agent": "Mozilla/5.0 (Macintosh) Thunderbird"}
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(pixel, headers=browser)).status_code == 200
            after_first = (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["kpis"]
            pipeline.clock.advance(timedelta(hours=1))
            for _ in range(2):
                assert (await client.get(pixel, headers=browser)).status_code == 200
        async with session_factory(engine)() as session:
            flags = list(
                await session.scalars(
                    select(MessageEventRow.is_machine)
                    .where(MessageEventRow.message_id == uuid.UUID(message["id"]))
                    .where(MessageEventRow.kind == "opened")
                    .order_by(MessageEventRow.id)
                )
            )
            row = await session.get_one(Message, uuid.UUID(message["id"]))
    finally:
        await engine.dispose()
    assert (after_first["total_opened"], after_first["total_opened_human"]) == (1, 0)
    assert flags == [True, False, False]
    assert row.opened_at is not None
    assert row.human_opened_at is not None
    assert row.human_opened_at - row.opened_at >= timedelta(hours=1)
    kpis = (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["kpis"]
    assert (kpis["total_opened"], kpis["total_opened_human"]) == (1, 1)


async def test_a_first_open_counts_on_the_local_day_of_the_campaign_window(
    pipeline: Pipeline, settings: Settings
) -> None:
    """At 23:30 UTC it is already the next day in Amsterdam, the zone of the test campaigns' window: the first
    open is counted on that local day in the timeline's store (SPEC §2.6)."""
    campaign, _ = await pipeline.campaign()
    mail = (await pipeline.sink.wait_for(len(pipeline.sink.received) + 1))[-1]
    now = pipeline.clock()
    late = now.replace(hour=23, minute=30, second=0, microsecond=0)
    late += timedelta(days=1) if late <= now else timedelta(0)
    pipeline.clock.advance(late - now)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{pipeline.tracker_url}{pixel_of(mail)}")).status_code == 200
    local_day = late.astimezone(ZoneInfo("Europe/Amsterdam")).date()
    assert local_day != late.date()
    days = await kpi_days(settings, uuid.UUID(campaign["id"]))
    assert {day: row["opened"] for day, row in days.items() if row.get("opened")} == {local_day: 1}


async def test_sigterm_while_hits_wait_for_their_commit_loses_no_hit_that_was_answered(
    pipeline: Pipeline, settings: Settings, tmp_path: Path
) -> None:
    """The test holds the message's row lock, so hits wait for their batch's commit; SIGTERM comes then.
    uvicorn drains those requests, the lock goes, the batch commits, and only then the writer stops: every
    hit that got its GIF is recorded. A tracker that answered before the commit loses the waiting batch."""
    campaign, _ = await pipeline.campaign()
    mail = (await pipeline.sink.wait_for(len(pipeline.sink.received) + 1))[-1]
    [message] = await pipeline.messages(campaign["id"])
    message_id = uuid.UUID(message["id"])
    engine = create_engine(settings.database_url, pool_size=2)
    sessions = session_factory(engine)

    try:
        async with (
            subprocess_service("tracker", with_ports(settings, "tracker"), tmp_path) as tracker,
            httpx.AsyncClient(timeout=30) as client,
        ):

            async def hits() -> list[int | None]:
                """Hit after hit on one connection, until the shutdown refuses one."""
                replies: list[int | None] = []
                while len(replies) < HITS_PER_CLIENT:
                    try:
                        replies.append((await client.get(f"{tracker.url}{pixel_of(mail)}")).status_code)
                    except httpx.HTTPError:
                        replies.append(None)
                        break
                return replies

            clients = [asyncio.create_task(hits()) for _ in range(CLIENTS)]
            while await open_events(sessions, message_id) < 50:  # noqa: ASYNC110 (the hits are on their way)
                await asyncio.sleep(0.01)
            async with engine.connect() as holder:
                await holder.execute(select(Message.id).where(Message.id == message_id).with_for_update())
                before = await open_events(sessions, message_id)
                await asyncio.sleep(0.5)  # the next batch waits for the lock, its hits for their GIFs
                tracker.process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                await holder.rollback()
            exit_code = await asyncio.to_thread(tracker.terminate)
            replies = [reply for done in await asyncio.gather(*clients) for reply in done]
        assert exit_code == -signal.SIGTERM, tracker.log()
        assert "Traceback" not in tracker.log()
        assert None in replies  # requests after the shutdown were refused
        assert await open_events(sessions, message_id) >= replies.count(200) > before
    finally:
        await engine.dispose()
