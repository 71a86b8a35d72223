"""Dispatch rules against PostgreSQL, driving the use cases directly with a movable clock."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from itertools import pairwise

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler.service import Scheduler
from services.sender.service import Sender
from shared.db import create_engine, session_factory
from shared.db.models import Campaign, CampaignStep, Message
from shared.events import SendMessage
from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN, ApiClient
from tests.support.clock import MovableClock
from tests.support.smtp import SmtpSink

pytestmark = pytest.mark.integration


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.database_url, pool_size=2)
    yield session_factory(engine)
    await engine.dispose()


async def planned_campaign(
    api: ApiClient,
    scheduler: Scheduler,
    sessions: async_sessionmaker[AsyncSession],
    leads: int,
    interval: int,
    port: int,
    emails: list[str] | None = None,
) -> uuid.UUID:
    """`leads` leads at random addresses, or the leads of `emails`."""
    domain = f"dispatch-{uuid.uuid4().hex[:8]}.example"
    await api.domain(domain, port, interval=interval)
    emails = emails or [f"{uuid.uuid4().hex[:8]}@lead.example" for _ in range(leads)]
    lead_ids = [(await api.lead(email))["id"] for email in emails]
    template = await api.template()
    draft = {"start_mode": "draft", "window": ALWAYS_OPEN}
    campaign_id = uuid.UUID((await api.campaign(template["id"], lead_ids, [domain], schedule=draft))["id"])
    async with sessions() as session, session.begin():
        await session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status="scheduled"))
    assert await scheduler.start_campaign(campaign_id) == leads
    return campaign_id


def send_command(message: Message) -> SendMessage:
    """The command the dispatcher would publish for this message."""
    return SendMessage(
        workspace_id=message.workspace_id,
        campaign_id=message.campaign_id,
        message_id=message.id,
        scheduled_at=message.scheduled_at,
        deadline=message.scheduled_at + timedelta(minutes=1),
    )


async def race(settings: Settings, clock: MovableClock, commands: list[SendMessage]) -> None:
    """Two senders, each with its own database connections, handle `commands` (alternating) all at once."""
    async with Sender(settings, clock) as first, Sender(settings, clock) as second:
        senders = [first, second]
        await asyncio.gather(*(senders[i % 2].handle(c) for i, c in enumerate(commands)))


async def messages_of(sessions: async_sessionmaker[AsyncSession], campaign_id: uuid.UUID) -> list[Message]:
    async with sessions() as session:
        rows = await session.scalars(select(Message).where(Message.campaign_id == campaign_id))
        return sorted(rows, key=lambda m: m.scheduled_at)


async def test_a_backlog_after_an_outage_is_replanned_from_now_never_burst(
    api: ApiClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    clock = MovableClock()
    scheduler = Scheduler(sessions, settings, clock)
    campaign_id = await planned_campaign(api, scheduler, sessions, leads=5, interval=600, port=1025)

    clock.advance(timedelta(hours=2))  # the scheduler was down: every slot is now long past
    assert await scheduler.dispatch_due() >= 5  # (other tests may have left due work too)

    messages = await messages_of(sessions, campaign_id)
    assert [m.status for m in messages] == ["planned"] * 5  # none dispatched late
    slots = [m.scheduled_at for m in messages]
    assert slots[0] >= clock() - timedelta(seconds=1)
    assert all(b - a >= timedelta(seconds=600) for a, b in pairwise(slots))


async def test_stop_while_dispatched_cancels_and_the_sender_sends_nothing(
    api: ApiClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], smtp_sink: SmtpSink
) -> None:
    clock = MovableClock()
    scheduler = Scheduler(sessions, settings, clock)
    campaign_id = await planned_campaign(api, scheduler, sessions, leads=1, interval=0, port=smtp_sink.port)
    assert await scheduler.dispatch_due() >= 1
    [message] = await messages_of(sessions, campaign_id)
    assert message.status == "dispatched"

    stopped = await api.http.post(f"/campaigns/{campaign_id}/stop")
    assert stopped.status_code == 200

    command = send_command(message)
    async with Sender(settings, clock) as sender:
        await sender.handle(command)
    [after] = await messages_of(sessions, campaign_id)
    assert after.status == "cancelled"
    assert smtp_sink.received == []


async def test_a_duplicated_send_command_raced_by_two_senders_sends_one_email(
    api: ApiClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], smtp_sink: SmtpSink
) -> None:
    clock = MovableClock()
    scheduler = Scheduler(sessions, settings, clock)
    campaign_id = await planned_campaign(api, scheduler, sessions, leads=1, interval=0, port=smtp_sink.port)
    await scheduler.dispatch_due()
    [message] = await messages_of(sessions, campaign_id)
    command = send_command(message)
    await race(settings, clock, [command, command, command])  # the third on the first sender again
    assert len(smtp_sink.received) == 1
    [after] = await messages_of(sessions, campaign_id)
    assert after.status == "sent"


async def test_a_campaign_owing_a_followup_is_not_completed_before_it_is_planned(
    api: ApiClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The `MessageSent` of another message may be handled between a send and the planning of its
    follow-up: the completion check must not finish the campaign in that gap."""
    clock = MovableClock()
    scheduler = Scheduler(sessions, settings, clock)
    campaign_id = await planned_campaign(api, scheduler, sessions, leads=1, interval=0, port=1025)
    async with sessions() as session, session.begin():
        campaign = await session.get_one(Campaign, campaign_id)
        await session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status="running"))
        session.add(
            CampaignStep(
                campaign_id=campaign_id, position=1, template_id=campaign.template_id, delay_days=3,
                attach_report=False, condition="always",
            )
        )  # fmt: skip
        await session.execute(
            update(Message).where(Message.campaign_id == campaign_id).values(status="sent", sent_at=clock())
        )
    await scheduler.message_settled(campaign_id)  # as if another message's outcome arrived first
    async with sessions() as session:
        assert (await session.get_one(Campaign, campaign_id)).status == "running"
    assert await scheduler.plan_next_step((await messages_of(sessions, campaign_id))[0].id)
    assert len(await messages_of(sessions, campaign_id)) == 2


async def test_racing_senders_never_start_two_transactions_on_one_domain_within_its_interval(
    api: ApiClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], smtp_sink: SmtpSink
) -> None:
    """Two messages of one domain dispatched together (as a skewed clock or a manual edit could) and
    handled by two senders at once: one transaction starts, the other waits for a slot of its own."""
    clock = MovableClock()
    scheduler = Scheduler(sessions, settings, clock)
    campaign_id = await planned_campaign(api, scheduler, sessions, leads=2, interval=120, port=smtp_sink.port)
    async with sessions() as session, session.begin():
        await session.execute(
            update(Message).where(Message.campaign_id == campaign_id).values(status="dispatched")
        )
    messages = await messages_of(sessions, campaign_id)
    clock.advance(messages[0].scheduled_at - clock())
    await race(settings, clock, [send_command(m) for m in messages])

    assert len(smtp_sink.received) == 1
    sent, deferred = sorted(await messages_of(sessions, campaign_id), key=lambda m: m.status != "sent")
    assert (sent.status, deferred.status) == ("sent", "planned")
    assert deferred.retry_count == 0
    gap = timedelta(seconds=120 - 30)  # interval − grace (min(60 s, interval / 4))
    assert deferred.not_before >= clock() + gap - timedelta(seconds=1)

    # Whichever of the two lost the race, its next dispatch is at a slot on or after its not_before.
    clock.advance(max(deferred.scheduled_at, clock()) - clock())
    await scheduler.dispatch_due()
    [again] = [m for m in await messages_of(sessions, campaign_id) if m.id == deferred.id]
    assert again.scheduled_at >= deferred.not_before


async def test_an_address_suppressed_after_planning_is_cancelled_at_send_time_never_sent(
    api: ApiClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], smtp_sink: SmtpSink
) -> None:
    """Suppressions are checked right before the SMTP transaction: by address (any case), and by domain,
    which also covers its subdomains."""
    tag = uuid.uuid4().hex[:8]
    by_parent, by_address, kept = f"jan@mx.{tag}.example", f"Piet@other-{tag}.example", f"ok@ok-{tag}.example"
    clock = MovableClock()
    scheduler = Scheduler(sessions, settings, clock)
    campaign_id = await planned_campaign(
        api,
        scheduler,
        sessions,
        leads=3,
        interval=0,
        port=smtp_sink.port,
        emails=[by_parent, by_address, kept],
    )
    for suppression in ({"domain": f"{tag}.example"}, {"email": by_address.upper()}):
        assert (await api.http.post("/suppressions", json=suppression)).status_code == 201
    await scheduler.dispatch_due()
    messages = await messages_of(sessions, campaign_id)
    async with Sender(settings, clock) as sender:
        for message in messages:
            await sender.handle(send_command(message))
    leads = {m.id: (await api.get(f"/leads/{m.lead_id}"))["email"] for m in messages}
    statuses = {leads[m.id]: m.status for m in await messages_of(sessions, campaign_id)}
    assert statuses == {by_parent: "cancelled", by_address: "cancelled", kept: "sent"}
    assert [mail.rcpt_tos for mail in smtp_sink.received] == [[kept]]


async def test_a_handler_abandoned_mid_transaction_still_finishes_and_records_its_email(
    api: ApiClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], smtp_sink: SmtpSink
) -> None:
    """When RabbitMQ's channel closes, its client throws into every running consumer callback: a claimed
    e-mail must still be sent once and recorded, not left `sending` until the lease calls it interrupted."""
    clock = MovableClock()
    scheduler = Scheduler(sessions, settings, clock)
    campaign_id = await planned_campaign(api, scheduler, sessions, leads=1, interval=0, port=smtp_sink.port)
    await scheduler.dispatch_due()
    [message] = await messages_of(sessions, campaign_id)
    taking = smtp_sink.handler.handle_DATA

    async def slow_data(*args: object) -> str:
        await asyncio.sleep(1.0)
        return await taking(*args)  # type: ignore[no-any-return]

    smtp_sink.handler.handle_DATA = slow_data  # type: ignore[method-assign]
    async with Sender(settings, clock) as sender:
        handler = asyncio.create_task(sender.handle(send_command(message)))
        for _ in range(500):  # until its server took MAIL FROM and it is recorded as sending
            if (await messages_of(sessions, campaign_id))[0].status == "sending":
                break
            await asyncio.sleep(0.02)
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handler
    [after] = await messages_of(sessions, campaign_id)
    assert after.status == "sent"
    assert len(smtp_sink.received) == 1
