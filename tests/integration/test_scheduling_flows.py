"""Follow-ups, retries, bounces and the lifecycle through the real broker, database and SMTP server.

The scheduler and sender run in-process with a clock the test can move, so "three days later" takes a second.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import AsyncExitStack
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from services.sender.main import create_app as create_sender
from shared.db import create_engine, session_factory
from shared.db.models import Message, MessageEventRow
from shared.settings import Settings
from tests.support.pipeline import Pipeline
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service

pytestmark = pytest.mark.integration


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_a_followup_threads_under_the_original_days_later(pipeline: Pipeline) -> None:
    campaign, _ = await pipeline.campaign(followup={"enabled": True, "days": 3})
    [original] = await pipeline.sink.wait_for(1)

    async def followup_planned() -> bool:
        return len(await pipeline.messages(campaign["id"])) == 2

    await pipeline.until(followup_planned)
    sent, followup = sorted(await pipeline.messages(campaign["id"]), key=lambda m: m["is_followup"])
    assert followup["is_followup"]
    assert followup["parent_message_id"] == sent["id"]
    assert followup["domain_used"] == sent["domain_used"]
    assert at(followup["scheduled_at"]) >= at(sent["sent_at"]) + timedelta(days=3)
    assert (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "running"

    pipeline.clock.advance(timedelta(days=3, minutes=1))
    _, reply = await pipeline.sink.wait_for(2)
    assert reply.message["Subject"] == "Re: Hello Jan"
    assert reply.message["In-Reply-To"] == original.message["Message-ID"]
    assert reply.message["References"] == original.message["Message-ID"]

    async def completed() -> bool:
        return (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed"

    await pipeline.until(completed)
    kpis = (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["kpis"]
    assert (kpis["total_planned"], kpis["total_sent"]) == (2, 2)


async def test_temporary_failures_retry_twice_then_fail_for_good_and_resend_delivers(
    pipeline: Pipeline,
) -> None:
    pipeline.sink.handler.reply = "451 4.3.0 Temporary local problem, try again later"
    tries_before = len(pipeline.sink.handler.mail_from_times)
    campaign, _ = await pipeline.campaign()

    async def failed_for_good() -> bool:
        messages = await pipeline.messages(campaign["id"])
        return bool(messages) and messages[0]["status"] == "failed"

    await pipeline.until(failed_for_good)
    [message] = await pipeline.messages(campaign["id"])
    assert pipeline.sink.handler.data_started == 3  # the first try and two retries
    first, second, third = pipeline.sink.handler.mail_from_times[tries_before:]
    assert second - first >= 1  # each retry waited for its backoff: 1 s, then 2 s
    assert third - second >= 2
    assert message["retry_count"] == 2
    assert message["last_error"].startswith("451 4.3.0")
    detail = await pipeline.api.get(f"/campaigns/{campaign['id']}")
    assert detail["kpis"]["total_failed"] == 1

    async def completed() -> bool:  # recorded when the scheduler consumes MessageFailed
        return (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed"

    await pipeline.until(completed)

    pipeline.sink.handler.reply = "250 2.0.0 OK"
    resent = await pipeline.api.http.post(f"/campaigns/messages/{message['id']}/resend")
    assert resent.status_code == 200, resent.text
    assert resent.json()["data"]["status"] == "planned"
    await pipeline.sink.wait_for(1)
    again = await pipeline.api.http.post(f"/campaigns/messages/{message['id']}/resend")
    assert again.status_code == 409

    async def sent() -> bool:
        kpis = (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["kpis"]
        return bool(kpis["total_sent"] == 1 and kpis["total_failed"] == 0)

    await pipeline.until(sent)


async def test_a_hard_bounce_suppresses_the_lead_and_plans_no_followup(pipeline: Pipeline) -> None:
    pipeline.sink.handler.reply = "550 5.1.1 <x@lead.example>: Recipient address rejected"
    campaign, [lead_id] = await pipeline.campaign(followup={"enabled": True, "days": 1})

    async def bounced() -> bool:
        return (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["kpis"]["total_bounced"] == 1

    await pipeline.until(bounced)
    detail = await pipeline.api.get(f"/campaigns/{campaign['id']}")
    assert detail["kpis"]["bounce_rate"] == 1.0
    [message] = await pipeline.messages(campaign["id"])
    assert message["status"] == "bounced"
    assert (await pipeline.api.get(f"/leads/{lead_id}"))["status"] == "bounced"
    await asyncio.sleep(0.5)
    assert len(await pipeline.messages(campaign["id"])) == 1  # no follow-up for a bounced lead


async def test_pause_holds_resume_replans_from_now_and_stop_cancels(pipeline: Pipeline) -> None:
    campaign, _ = await pipeline.campaign(leads=3, interval=3600)  # slots an hour apart, on the full hour
    cid = campaign["id"]

    async def all_planned() -> bool:
        return len(await pipeline.messages(cid)) == 3

    await pipeline.until(all_planned)
    first_slot = min(at(m["scheduled_at"]) for m in await pipeline.messages(cid))
    pipeline.clock.advance(first_slot - pipeline.clock())
    await pipeline.sink.wait_for(1)
    paused = await pipeline.api.http.post(f"/campaigns/{cid}/pause")
    assert paused.status_code == 200
    assert paused.json()["data"]["status"] == "paused"
    assert (await pipeline.api.http.post(f"/campaigns/{cid}/pause")).status_code == 409

    before = {
        m["id"]: at(m["scheduled_at"]) for m in await pipeline.messages(cid) if m["status"] == "planned"
    }
    assert len(before) == 2
    pipeline.clock.advance(timedelta(days=1))  # a day later, both old slots have passed
    await asyncio.sleep(1.5)
    assert len(pipeline.sink.received) == 1  # nothing went out while paused

    resumed = await pipeline.api.http.post(f"/campaigns/{cid}/resume")
    assert resumed.json()["data"]["status"] == "running"

    async def replanned() -> bool:
        after = {
            m["id"]: at(m["scheduled_at"]) for m in await pipeline.messages(cid) if m["status"] == "planned"
        }
        return len(after) >= 1 and all(after[i] != before[i] for i in after)

    await pipeline.until(replanned)
    planned = sorted(at(m["scheduled_at"]) for m in await pipeline.messages(cid) if m["status"] != "sent")
    assert all(slot >= pipeline.clock() - timedelta(seconds=5) for slot in planned)

    stopped = await pipeline.api.http.post(f"/campaigns/{cid}/stop")
    assert stopped.json()["data"]["status"] == "stopped"
    statuses = sorted(m["status"] for m in await pipeline.messages(cid))
    assert statuses.count("cancelled") == 3 - statuses.count("sent")
    assert (await pipeline.api.http.post(f"/campaigns/{cid}/resume")).status_code == 409
    detail = await pipeline.api.get(f"/campaigns/{cid}")
    assert detail["kpis"]["total_cancelled"] == statuses.count("cancelled")
    assert detail["kpis"]["total_planned"] == 3


async def test_a_draft_waits_until_started(pipeline: Pipeline) -> None:
    campaign, _ = await pipeline.campaign(schedule={"start_mode": "draft", "window": {"holidays": None}})
    assert campaign["status"] == "draft"
    assert (await pipeline.api.http.post(f"/campaigns/{campaign['id']}/pause")).status_code == 409
    await asyncio.sleep(0.5)
    assert await pipeline.messages(campaign["id"]) == []
    started = await pipeline.api.http.post(f"/campaigns/{campaign['id']}/start")
    assert started.json()["data"]["status"] == "scheduled"
    assert (await pipeline.api.http.post(f"/campaigns/{campaign['id']}/start")).status_code == 409

    async def planned() -> bool:
        return len(await pipeline.messages(campaign["id"])) == 1

    await pipeline.until(planned)


async def test_no_smtp_transaction_starts_after_pause_returns(pipeline: Pipeline, settings: Settings) -> None:
    # A server slow to greet: senders hold claimed messages a while before their MAIL FROM. The pause lands
    # in exactly that gap, and must not return before those transactions have begun.
    pipeline.sink.handler.ehlo_delay = 0.5
    pipeline.sink.handler.data_delay = 0.5
    async with AsyncExitStack() as more_workers:  # three senders in all, two at a time each
        for _ in range(2):
            await more_workers.enter_async_context(
                inprocess_service(
                    create_sender,
                    settings.model_copy(update={"sender_concurrency": 2}),
                    free_port(),
                    clock=pipeline.clock,
                )
            )
        campaign, _ = await pipeline.campaign(leads=24)  # twice what the workers take at once (8 + 2 + 2)
        for _ in range(500):
            if pipeline.sink.handler.ehlo_started >= 3:
                break
            await asyncio.sleep(0.01)
        paused = await pipeline.api.http.post(f"/campaigns/{campaign['id']}/pause")
        returned_at = time.monotonic()
        assert paused.status_code == 200
        await asyncio.sleep(2.5)  # in-flight transactions finish; nothing new may begin

    assert pipeline.sink.handler.mail_from_times
    assert max(pipeline.sink.handler.mail_from_times) < returned_at
    statuses = [m["status"] for m in await pipeline.messages(campaign["id"])]
    assert statuses.count("sent") == len(pipeline.sink.received) < 24
    assert statuses.count("planned") == 24 - statuses.count("sent")


async def test_followups_attach_the_leads_report_and_record_when_there_is_none(
    pipeline: Pipeline, settings: Settings
) -> None:
    pdf = b"%PDF-1.4\n% a tiny test report\n%%EOF\n"
    campaign, (with_report, without_report) = await pipeline.campaign(
        leads=2, followup={"enabled": True, "days": 1, "attach_report": True}
    )
    upload = await pipeline.api.http.put(
        f"/leads/{with_report}/report", files={"file": ("q3-report.pdf", pdf, "application/pdf")}
    )
    assert upload.status_code == 200, upload.text
    await pipeline.sink.wait_for(2)

    async def followups_planned() -> bool:
        return len(await pipeline.messages(campaign["id"])) == 4

    await pipeline.until(followups_planned)
    pipeline.clock.advance(timedelta(days=1, minutes=1))
    mails = await pipeline.sink.wait_for(4)
    followups = [m.message for m in mails[2:]]
    by_lead = {m["To"]: m for m in followups}
    emails = {m["lead_id"]: m["lead_email"] for m in await pipeline.messages(campaign["id"])}
    attached = [part.get_filename() for part in by_lead[emails[with_report]].iter_attachments()]
    assert attached == ["q3-report.pdf"]
    assert list(by_lead[emails[without_report]].iter_attachments()) == []
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            notes = {
                str(lead): data.get("report")
                for lead, data in await session.execute(
                    select(Message.lead_id, MessageEventRow.data)
                    .join(Message, Message.id == MessageEventRow.message_id)
                    .where(Message.campaign_id == uuid.UUID(campaign["id"]), Message.is_followup.is_(True))
                )
            }
    finally:
        await engine.dispose()
    assert notes == {with_report: "attached", without_report: "none: the lead has no report"}


async def test_a_report_must_be_a_pdf_of_at_most_5_mb(pipeline: Pipeline) -> None:
    lead = await pipeline.api.lead(f"{uuid.uuid4().hex[:8]}@report.example")
    not_pdf = await pipeline.api.http.put(f"/leads/{lead['id']}/report", files={"file": ("x.pdf", b"hello")})
    assert not_pdf.status_code == 422
    huge = b"%PDF-" + b"0" * (5 * 1024 * 1024)
    too_big = await pipeline.api.http.put(f"/leads/{lead['id']}/report", files={"file": ("x.pdf", huge)})
    assert too_big.status_code == 413
    unknown = await pipeline.api.http.put(
        f"/leads/{uuid.uuid4()}/report", files={"file": ("x.pdf", b"%PDF-1")}
    )
    assert unknown.status_code == 404
