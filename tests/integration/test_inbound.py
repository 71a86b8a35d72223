"""Bounces and replies arriving at the tracker, after real sends through broker, database and SMTP sink."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared.settings import Settings
from tests.support.pipeline import Pipeline
from tests.support.samples import postfix_dsn

pytestmark = pytest.mark.integration


async def sent_message(pipeline: Pipeline, **campaign: Any) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """A campaign of one lead whose first e-mail reached the sink, with a follow-up owed in 3 days."""
    created, _ = await pipeline.campaign(followup={"enabled": True, "days": 3}, **campaign)
    before = len(pipeline.sink.received)
    mails = await pipeline.sink.wait_for(before + 1)

    async def followup_planned() -> bool:
        return len(await pipeline.messages(created["id"])) == 2

    await pipeline.until(followup_planned)
    original = next(m for m in await pipeline.messages(created["id"]) if not m["is_followup"])
    return created, original, mails[before]


async def post(
    pipeline: Pipeline, settings: Settings, path: str, raw: bytes, **params: str
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=pipeline.tracker_url) as client:
        headers = {"X-Maildash-Secret": settings.inbound_secret, "Content-Type": "message/rfc822"}
        return await client.post(path, content=raw, headers=headers, params=params)


async def test_a_hard_dsn_bounces_the_message_and_cancels_the_followup(
    pipeline: Pipeline, settings: Settings
) -> None:
    campaign, original, mail = await sent_message(pipeline)
    dsn = postfix_dsn(mail.mail_from, mail.message["Message-ID"])

    first = await post(pipeline, settings, "/inbound/bounces", dsn)
    assert first.status_code == 200, first.text
    assert first.json()["data"] == {"message_id": original["id"], "outcome": "hard_bounce", "recorded": True}
    again = await post(pipeline, settings, "/inbound/bounces", dsn)
    assert again.json()["data"]["recorded"] is False  # counted once

    async def completed() -> bool:
        return (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed"

    await pipeline.until(completed)
    statuses = {m["is_followup"]: m["status"] for m in await pipeline.messages(campaign["id"])}
    assert statuses == {False: "bounced", True: "cancelled"}
    assert (await pipeline.api.get(f"/leads/{original['lead_id']}"))["status"] == "bounced"
    suppressed = await pipeline.api.get(f"/suppressions?search={original['lead_email']}")
    assert suppressed["total"] == 1
    kpis = (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["kpis"]
    assert (kpis["total_sent"], kpis["total_bounced"], kpis["bounce_rate"]) == (1, 1, 1.0)


async def test_a_soft_dsn_is_recorded_and_changes_nothing_else(
    pipeline: Pipeline, settings: Settings
) -> None:
    campaign, _, mail = await sent_message(pipeline)
    dsn = postfix_dsn(mail.mail_from, mail.message["Message-ID"], status="4.4.1", action="delayed")
    reply = await post(pipeline, settings, "/inbound/bounces", dsn)
    assert reply.json()["data"]["outcome"] == "soft_bounce"
    statuses = {m["is_followup"]: m["status"] for m in await pipeline.messages(campaign["id"])}
    assert statuses == {False: "sent", True: "planned"}


async def test_a_reply_by_references_stops_the_followup_and_an_out_of_office_does_not(
    pipeline: Pipeline, settings: Settings
) -> None:
    campaign, original, mail = await sent_message(pipeline)
    message_id = mail.message["Message-ID"]
    lead = original["lead_email"]
    away = f"From: {lead}\nSubject: Away\nIn-Reply-To: {message_id}\nAuto-Submitted: auto-replied\n\n"
    auto = await post(pipeline, settings, "/inbound/replies", away.encode())
    assert auto.json()["data"]["outcome"] == "automatic_reply"
    assert (await pipeline.api.get(f"/leads/{original['lead_id']}"))["status"] == "active"

    answer = f"From: {lead}\nSubject: Re: hi\nReferences: <other@x.example> {message_id}\n\nYes!\n"
    replied = await post(pipeline, settings, "/inbound/replies", answer.encode())
    assert replied.json()["data"] == {"message_id": original["id"], "outcome": "replied", "recorded": True}
    assert (await pipeline.api.get(f"/leads/{original['lead_id']}"))["status"] == "replied"

    async def completed() -> bool:
        return (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed"

    await pipeline.until(completed)  # the cancelled follow-up was all it waited for
    followup = next(m for m in await pipeline.messages(campaign["id"]) if m["is_followup"])
    assert followup["status"] == "cancelled"


async def test_a_mail_to_the_list_unsubscribe_address_unsubscribes(
    pipeline: Pipeline, settings: Settings
) -> None:
    _, original, mail = await sent_message(pipeline)
    mailto = mail.message["List-Unsubscribe"].split("<mailto:")[1].rstrip(">")
    raw = f"From: {original['lead_email']}\nTo: {mailto}\nSubject: unsubscribe\n\n".encode()
    reply = await post(pipeline, settings, "/inbound/replies", raw)
    assert reply.json()["data"]["outcome"] == "unsubscribed"
    assert (await pipeline.api.get(f"/leads/{original['lead_id']}"))["status"] == "unsubscribed"


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/inbound/bounces", b""),
        ("/inbound/bounces", b"\x00\x01 not mail at all"),
        ("/inbound/bounces", postfix_dsn("bounce+" + "0" * 32 + "@x.example", "<nobody@x.example>")),
        ("/inbound/replies", b"From: a@b.example\nSubject: hi\n\nno thread\n"),
        ("/inbound/replies", b"From: a@b.example\nIn-Reply-To: <never-sent@x.example>\n\n"),
        ("/inbound/replies", b"From: a@b.example\nTo: unsubscribe+forged@x.example\n\n"),
    ],
)
async def test_mail_that_cannot_be_used_is_a_422_with_a_reason(
    pipeline: Pipeline, settings: Settings, path: str, raw: bytes
) -> None:
    reply = await post(pipeline, settings, path, raw)
    assert reply.status_code == 422
    assert reply.json()["error_code"] == "not_understood"
    assert reply.json()["error"]


async def test_inbound_needs_the_shared_secret_and_bounds_its_size(
    pipeline: Pipeline, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=pipeline.tracker_url) as client:
        for headers in ({}, {"X-Maildash-Secret": "wrong"}):
            refused = await client.post("/inbound/bounces", content=b"x", headers=headers)
            assert refused.status_code == 401
    huge = await post(pipeline, settings, "/inbound/replies", b"x" * (10 * 1024 * 1024 + 1))
    assert huge.status_code == 413
