"""Sequences (issue 19) through the real broker, database, tracker and SMTP sink, with a clock the test moves:
each step planned when the previous one is sent, on the same domain and thread, stopped by a reply, and
skipped by its condition at dispatch."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text

from services.scheduler import repository as scheduler_repository
from shared.db import asyncpg_dsn, create_engine, session_factory
from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN
from tests.support.pipeline import Pipeline
from tests.support.samples import pixel_of
from tools.smtp_sink import Received

pytestmark = pytest.mark.integration
WAITING_ON_A_LOCK = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def by_step(pipeline: Pipeline, campaign_id: str) -> dict[str, dict[int, dict[str, Any]]]:
    """The campaign's messages per lead e-mail, then per step."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for message in await pipeline.messages(campaign_id):
        found.setdefault(message["lead_email"], {})[message["step"]] = message
    return found


async def planned_steps(pipeline: Pipeline, campaign_id: str, count: int) -> None:
    async def planned() -> bool:
        return len(await pipeline.messages(campaign_id)) == count

    await pipeline.until(planned)


async def completed(pipeline: Pipeline, campaign_id: str) -> None:
    async def done() -> bool:
        return (await pipeline.api.get(f"/campaigns/{campaign_id}"))["status"] == "completed"

    await pipeline.until(done)


async def inbound(pipeline: Pipeline, settings: Settings, path: str, raw: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=pipeline.tracker_url) as client:
        headers = {"X-Maildash-Secret": settings.inbound_secret, "Content-Type": "message/rfc822"}
        answer = await client.post(path, content=raw.encode(), headers=headers)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def mails_to(pipeline: Pipeline, email: str) -> list[Received]:
    return [m for m in pipeline.sink.received if m.rcpt_tos == [email]]


async def test_a_four_step_sequence_threads_on_one_domain_and_a_reply_after_step_two_cancels_the_rest(
    pipeline: Pipeline, settings: Settings
) -> None:
    own = await pipeline.api.template(name="Angle", followup_subject="Another angle, {{ first_name }}")
    bump = await pipeline.api.template(name="Bump", body_html="<p>Just a bump</p>")
    steps = [
        {"template_id": bump["id"], "delay_days": 2},
        {"template_id": own["id"], "delay_days": 3},
        {"template_id": bump["id"], "delay_days": 4},
        {"template_id": bump["id"], "delay_days": 5},
    ]
    campaign, [lead_id] = await pipeline.campaign(steps=steps)
    assert [s["position"] for s in campaign["steps"]] == [1, 2, 3, 4]
    assert (campaign["followup_enabled"], campaign["followup_days"]) == (True, 2)
    email = (await pipeline.api.get(f"/leads/{lead_id}"))["email"]
    before = len(pipeline.sink.received)

    await pipeline.sink.wait_for(before + 1)
    await planned_steps(pipeline, campaign["id"], 2)
    pipeline.clock.advance(timedelta(days=2, minutes=1))
    await pipeline.sink.wait_for(before + 2)
    await planned_steps(pipeline, campaign["id"], 3)
    pipeline.clock.advance(timedelta(days=3, minutes=1))
    await pipeline.sink.wait_for(before + 3)
    await planned_steps(pipeline, campaign["id"], 4)

    first, second, third = (m.message for m in mails_to(pipeline, email))
    assert first["Subject"] == "Hello Jan"
    assert "In-Reply-To" not in first
    assert second["Subject"] == "Re: Hello Jan"  # its template has no follow-up subject
    assert "Just a bump" in second.get_body(("html",)).get_content()
    assert (second["In-Reply-To"], second["References"]) == (first["Message-ID"], first["Message-ID"])
    assert third["Subject"] == "Another angle, Jan"
    assert third["In-Reply-To"] == second["Message-ID"]
    assert third["References"].split() == [first["Message-ID"], second["Message-ID"]]

    messages = (await by_step(pipeline, campaign["id"]))[email]
    assert len({m["domain_used"] for m in messages.values()}) == 1
    assert messages[3]["status"] == "planned"
    assert messages[3]["parent_message_id"] == messages[2]["id"]
    assert at(messages[3]["scheduled_at"]) >= at(messages[2]["sent_at"]) + timedelta(days=4)

    answer = f"From: {email}\nSubject: Re: angle\nIn-Reply-To: {third['Message-ID']}\n\nLet's talk.\n"
    replied = await inbound(pipeline, settings, "/inbound/replies", answer)
    assert (replied["message_id"], replied["outcome"]) == (messages[2]["id"], "replied")
    await completed(pipeline, campaign["id"])

    pipeline.clock.advance(timedelta(days=20))
    await pipeline.until(lambda: _quiet(pipeline, campaign["id"]))
    assert len(mails_to(pipeline, email)) == 3
    messages = (await by_step(pipeline, campaign["id"]))[email]
    assert {step: m["status"] for step, m in messages.items()} == {
        0: "sent",
        1: "sent",
        2: "sent",
        3: "cancelled",
    }  # fmt: skip  -- step 4 was never planned

    detail = await pipeline.api.get(f"/campaigns/{campaign['id']}")
    per_step = {row["step"]: row for row in detail["kpis_by_step"]}
    assert sorted(per_step) == [0, 1, 2, 3, 4]
    assert [per_step[s]["sent"] for s in range(5)] == [1, 1, 1, 0, 0]
    assert [per_step[s]["replied"] for s in range(5)] == [0, 0, 1, 0, 0]
    assert (per_step[3]["planned"], per_step[3]["cancelled"], per_step[3]["skipped"]) == (1, 1, 0)
    assert per_step[4]["planned"] == 0
    kpis = detail["kpis"]
    assert (kpis["total_sent"], kpis["total_replied"], kpis["total_cancelled"]) == (3, 1, 1)
    assert sum(per_step[s]["sent"] for s in per_step) == kpis["total_sent"]
    step_two = (await pipeline.api.get(f"/campaigns/{campaign['id']}?step=2"))["timeline"]
    assert (sum(day["sent"] for day in step_two), sum(day["replied"] for day in step_two)) == (1, 1)


async def _quiet(pipeline: Pipeline, campaign_id: str) -> bool:
    """Nothing of the campaign is left to send."""
    statuses = {m["status"] for m in await pipeline.messages(campaign_id)}
    return not statuses & {"planned", "dispatched", "sending"}


async def test_a_not_opened_step_is_skipped_after_a_human_open_and_sent_after_a_machine_open(
    pipeline: Pipeline,
) -> None:
    bump = await pipeline.api.template(name="Bump", body_html="<p>Did you see it?</p>")
    steps = [
        {"template_id": bump["id"], "delay_days": 1, "condition": "not_opened"},
        {"template_id": bump["id"], "delay_days": 1},
    ]
    campaign, lead_ids = await pipeline.campaign(leads=2, steps=steps)
    human, machine = [(await pipeline.api.get(f"/leads/{lead}"))["email"] for lead in lead_ids]
    before = len(pipeline.sink.received)
    await pipeline.sink.wait_for(before + 2)
    await planned_steps(pipeline, campaign["id"], 4)

    async with httpx.AsyncClient(base_url=pipeline.tracker_url) as tracker:
        [machine_first] = mails_to(pipeline, machine)
        # A security scanner fetches the pixel: a machine open, which the condition does not count.
        await tracker.get(pixel_of(machine_first), headers={"User-Agent": "Barracuda Sentinel"})
        pipeline.clock.advance(timedelta(hours=1))
        [human_first] = mails_to(pipeline, human)
        await tracker.get(pixel_of(human_first), headers={"User-Agent": "Mozilla/5.0 Thunderbird"})

    pipeline.clock.advance(timedelta(days=1))
    await planned_steps(pipeline, campaign["id"], 6)  # step 2 of each: after the skip, and after the send
    messages = await by_step(pipeline, campaign["id"])
    assert messages[human][1]["status"] == "cancelled"
    assert messages[human][1]["last_error"].startswith("skipped: condition not_opened")
    assert messages[machine][1]["status"] == "sent"
    assert messages[human][2]["parent_message_id"] == messages[human][1]["id"]
    skipped_slot = at(messages[human][1]["scheduled_at"])
    assert at(messages[human][2]["scheduled_at"]) >= skipped_slot + timedelta(days=1)

    pipeline.clock.advance(timedelta(days=1, minutes=1))
    await completed(pipeline, campaign["id"])
    assert (len(mails_to(pipeline, human)), len(mails_to(pipeline, machine))) == (2, 3)
    last_to_human = mails_to(pipeline, human)[-1].message
    # The skipped step never went: the thread is the first e-mail alone.
    assert last_to_human["In-Reply-To"] == human_first.message["Message-ID"]
    assert last_to_human["References"] == human_first.message["Message-ID"]

    detail = await pipeline.api.get(f"/campaigns/{campaign['id']}")
    per_step = {row["step"]: row for row in detail["kpis_by_step"]}
    assert (per_step[1]["planned"], per_step[1]["sent"], per_step[1]["skipped"]) == (2, 1, 1)
    assert (per_step[0]["opened"], per_step[0]["opened_human"]) == (2, 1)
    assert per_step[2]["sent"] == 2
    assert detail["kpis"]["total_cancelled"] == 1  # the skip, counted honestly beside the sends


async def test_stop_rules_end_a_sequence_on_a_click_and_on_a_reply_from_the_lead_s_company(
    pipeline: Pipeline, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    domain = f"stop-{run}.example"
    await pipeline.api.domain(domain, pipeline.sink.port)
    addresses = [
        f"clicks@a-{run}.example",
        f"boss@b-{run}.example",
        f"team@b-{run}.example",
        f"d@d-{run}.example",
        f"away@e-{run}.example",
        f"anna-{run}@gmail.com",  # free mail: her reply is no colleague's of …
        f"bert-{run}@gmail.com",  # … his
    ]
    leads = [(await pipeline.api.lead(address, first_name="Jan"))["id"] for address in addresses]
    template = await pipeline.api.template(body_html='<p>Hi</p><a href="https://offer.example/">offer</a>')
    bump = await pipeline.api.template(name="Bump", body_html="<p>Bump</p>")
    campaign = await pipeline.api.campaign(
        template["id"], leads, [domain], steps=[{"template_id": bump["id"], "delay_days": 1}],
        stop_rules={"on_click": True, "on_company_reply": True, "on_auto_reply": True},
        tracking={"opens": True, "clicks": True},
    )  # fmt: skip
    assert campaign["stop_rules"] == {"on_auto_reply": True, "on_click": True, "on_company_reply": True}
    await planned_steps(pipeline, campaign["id"], 14)
    clicker, boss, _, _, away, anna, _ = (mails_to(pipeline, address)[0] for address in addresses)
    html = clicker.message.get_body(("html",)).get_content()
    link = re.search(r'href="([^"]+/track/click[^"]+)"', html)
    assert link is not None
    async with httpx.AsyncClient() as browser:
        assert (await browser.get(link.group(1).replace("&amp;", "&"))).status_code == 302
    answer = (
        f"From: {addresses[1]}\nSubject: Re: hi\nIn-Reply-To: {boss.message['Message-ID']}\n\nNo thanks.\n"
    )
    assert (await inbound(pipeline, settings, "/inbound/replies", answer))["outcome"] == "replied"
    answer = f"From: {addresses[5]}\nSubject: Re: hi\nIn-Reply-To: {anna.message['Message-ID']}\n\nLater.\n"
    assert (await inbound(pipeline, settings, "/inbound/replies", answer))["outcome"] == "replied"
    holiday = (
        f"From: {addresses[4]}\nSubject: Away\nIn-Reply-To: {away.message['Message-ID']}\n"
        "Auto-Submitted: auto-replied\n\nBack on Monday.\n"
    )
    assert (await inbound(pipeline, settings, "/inbound/replies", holiday))["outcome"] == "automatic_reply"

    pipeline.clock.advance(timedelta(days=1, minutes=1))
    await completed(pipeline, campaign["id"])
    steps = {email: messages[1] for email, messages in (await by_step(pipeline, campaign["id"])).items()}
    assert steps[addresses[0]]["last_error"] == "stopped: the lead clicked"
    assert steps[addresses[1]]["status"] == "cancelled"  # the reply cancelled it at once
    assert steps[addresses[2]]["last_error"] == "stopped: someone at the lead's company domain replied"
    assert steps[addresses[3]]["status"] == "sent"
    assert steps[addresses[4]]["last_error"] == "stopped: the lead sent an automatic reply"
    assert steps[addresses[5]]["status"] == "cancelled"
    assert steps[addresses[6]]["status"] == "sent"  # another gmail.com address's reply stops nobody
    assert [len(mails_to(pipeline, address)) for address in addresses] == [1, 1, 1, 2, 1, 1, 2]
    per_step = {
        row["step"]: row for row in (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["kpis_by_step"]
    }
    figures = [per_step[1][name] for name in ("planned", "sent", "cancelled", "skipped")]
    assert figures == [7, 2, 5, 0]


async def test_editing_the_steps_of_a_running_campaign_applies_to_the_steps_not_planned_yet(
    pipeline: Pipeline,
) -> None:
    first = await pipeline.api.template(name="First bump")
    later = await pipeline.api.template(name="Later bump", followup_subject="Later")
    steps = [{"template_id": first["id"], "delay_days": 2}, {"template_id": first["id"], "delay_days": 2}]
    campaign, _ = await pipeline.campaign(steps=steps)
    await planned_steps(pipeline, campaign["id"], 2)  # step 1 is planned for the lead

    wanted = [
        {"template_id": later["id"], "delay_days": 5},
        {"template_id": later["id"], "delay_days": 1, "condition": "not_clicked"},
        {"template_id": later["id"], "delay_days": 1},
    ]
    answer = await pipeline.api.http.put(f"/campaigns/{campaign['id']}/steps", json={"steps": wanted})
    assert answer.status_code == 200, answer.text
    edit = answer.json()["data"]
    assert (edit["applied_from"], edit["unchanged"]) == (2, [1])
    assert "step 2" in edit["note"]
    assert [(s["template_id"], s["delay_days"], s["condition"]) for s in edit["steps"]] == [
        (first["id"], 2, "always"), (later["id"], 1, "not_clicked"), (later["id"], 1, "always"),
    ]  # fmt: skip

    pipeline.clock.advance(timedelta(days=2, minutes=1))
    await planned_steps(pipeline, campaign["id"], 3)
    pipeline.clock.advance(timedelta(days=1, minutes=1))
    await planned_steps(pipeline, campaign["id"], 4)
    pipeline.clock.advance(timedelta(days=1, minutes=1))
    await completed(pipeline, campaign["id"])
    subjects = [m.message["Subject"] for m in pipeline.sink.received[-4:]]
    assert subjects == ["Hello Jan", "Re: Hello Jan", "Later", "Later"]

    stopped = await pipeline.api.http.post(f"/campaigns/{campaign['id']}/stop")
    assert stopped.status_code == 409  # completed is final too
    refused = await pipeline.api.http.put(f"/campaigns/{campaign['id']}/steps", json={"steps": wanted})
    assert refused.status_code == 409


async def test_the_wizard_takes_steps_or_the_old_followup_and_refuses_what_is_not_a_sequence(
    pipeline: Pipeline,
) -> None:
    domain = f"wizard-{uuid.uuid4().hex[:8]}.example"
    await pipeline.api.domain(domain, pipeline.sink.port)
    lead = await pipeline.api.lead(f"{uuid.uuid4().hex[:8]}@lead.example")
    template = await pipeline.api.template()
    base = {
        "name": "Wizard", "template_id": template["id"], "domains": [domain],
        "audience": {"mode": "static", "lead_ids": [lead["id"]]},
        "schedule": {"start_mode": "draft", "window": ALWAYS_OPEN},
    }  # fmt: skip
    old = await pipeline.api.create("/campaigns", {**base, "followup": {"enabled": True, "days": 4}})
    assert [(s["position"], s["template_id"], s["delay_days"]) for s in old["steps"]] == [
        (1, template["id"], 4)
    ]
    steps = [
        {"template_id": template["id"], "delay_days": 2},
        {"template_id": template["id"], "delay_days": 3},
    ]
    planned = (await pipeline.api.http.post("/campaigns/dry-run", json={**base, "steps": steps})).json()[
        "data"
    ]
    day = date.fromisoformat(planned["per_day"][0]["date"])
    assert [(s["step"], s["count"], s["per_day"][0]["date"]) for s in planned["steps_expected"]] == [
        (1, 1, str(day + timedelta(days=2))), (2, 1, str(day + timedelta(days=5))),
    ]  # fmt: skip
    assert planned["followups_expected"] == 1
    assert "cannot know" in planned["steps_note"]
    assert [s["condition"] for s in planned["steps"]] == ["always", "always"]

    bad = [
        {**base, "steps": steps, "followup": {"enabled": True}},
        {**base, "steps": [{"template_id": template["id"], "delay_days": 2, "condition": "sometimes"}]},
        {**base, "steps": [{"template_id": str(uuid.uuid4()), "delay_days": 2}]},
        {**base, "steps": [{"template_id": template["id"], "delay_days": 0}]},
        {**base, "steps": [{"template_id": template["id"], "delay_days": 2}] * 13},
    ]
    for body in bad:
        answer = await pipeline.api.http.post("/campaigns", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error_code"] == "validation_error"
    step_template = await pipeline.api.template(name="Only in a step")
    await pipeline.api.create(
        "/campaigns", {**base, "steps": [{"template_id": step_template["id"], "delay_days": 1}]}
    )
    deleted = await pipeline.api.http.delete(f"/templates/{step_template['id']}")
    assert deleted.status_code == 409  # a step of an unfinished campaign uses it


async def test_a_resend_of_a_failed_step_plans_that_step_alone_and_the_sequence_goes_on_from_it(
    pipeline: Pipeline,
) -> None:
    bump = await pipeline.api.template(name="Bump")
    steps = [{"template_id": bump["id"], "delay_days": 1}, {"template_id": bump["id"], "delay_days": 1}]
    campaign, [lead_id] = await pipeline.campaign(steps=steps)
    email = (await pipeline.api.get(f"/leads/{lead_id}"))["email"]
    await planned_steps(pipeline, campaign["id"], 2)
    pipeline.sink.handler.reply_to[email] = "451 4.3.0 try again later"
    pipeline.clock.advance(timedelta(days=1, minutes=1))

    async def step_failed() -> bool:
        step = (await by_step(pipeline, campaign["id"]))[email][1]
        return bool(step["status"] == "failed")

    await pipeline.until(step_failed, seconds=30)  # the first try and two retries
    await completed(pipeline, campaign["id"])  # nothing owed: a failed step ends the lead's sequence
    before = (await by_step(pipeline, campaign["id"]))[email]
    assert sorted(before) == [0, 1]

    del pipeline.sink.handler.reply_to[email]
    resent = await pipeline.api.http.post(f"/campaigns/messages/{before[1]['id']}/resend")
    assert resent.status_code == 200, resent.text
    assert resent.json()["data"]["step"] == 1
    await planned_steps(pipeline, campaign["id"], 3)  # step 1 sent again, then step 2 planned from it
    after = (await by_step(pipeline, campaign["id"]))[email]
    assert after[0] == before[0]  # the first e-mail untouched
    assert (after[1]["status"], after[1]["retry_count"]) == ("sent", 3)
    assert after[2]["parent_message_id"] == after[1]["id"]
    assert at(after[2]["scheduled_at"]) >= at(after[1]["sent_at"]) + timedelta(days=1)
    pipeline.clock.advance(timedelta(days=1, minutes=1))
    await completed(pipeline, campaign["id"])
    assert len(mails_to(pipeline, email)) == 3


async def test_pause_resume_and_stop_act_on_every_step(pipeline: Pipeline) -> None:
    bump = await pipeline.api.template(name="Bump")
    steps = [{"template_id": bump["id"], "delay_days": 1}, {"template_id": bump["id"], "delay_days": 1}]
    campaign, [lead_id] = await pipeline.campaign(steps=steps)
    email = (await pipeline.api.get(f"/leads/{lead_id}"))["email"]
    await planned_steps(pipeline, campaign["id"], 2)
    path = f"/campaigns/{campaign['id']}"
    assert (await pipeline.api.http.post(f"{path}/pause")).status_code == 200
    pipeline.clock.advance(timedelta(days=3))
    await asyncio.sleep(1)  # the dispatcher sees the step due, and leaves it: the campaign is paused
    assert len(mails_to(pipeline, email)) == 1
    assert (await by_step(pipeline, campaign["id"]))[email][1]["status"] == "planned"

    assert (await pipeline.api.http.post(f"{path}/resume")).status_code == 200
    await planned_steps(pipeline, campaign["id"], 3)  # step 1 re-slotted from now and sent, step 2 planned
    messages = (await by_step(pipeline, campaign["id"]))[email]
    assert messages[1]["status"] == "sent"
    assert messages[1]["domain_used"] == messages[0]["domain_used"]

    assert (await pipeline.api.http.post(f"{path}/stop")).status_code == 200
    assert (await by_step(pipeline, campaign["id"]))[email][2]["status"] == "cancelled"
    pipeline.clock.advance(timedelta(days=3))
    await asyncio.sleep(1)
    assert len(mails_to(pipeline, email)) == 2


async def test_steps_an_edit_adds_reach_leads_that_had_finished_the_old_sequence(pipeline: Pipeline) -> None:
    bump = await pipeline.api.template(name="Bump")
    campaign, lead_ids = await pipeline.campaign(
        leads=2, interval=3600, steps=[{"template_id": bump["id"], "delay_days": 1}]
    )
    first, second = [(await pipeline.api.get(f"/leads/{lead}"))["email"] for lead in lead_ids]
    for _ in range(2):  # the two first e-mails, an hour apart on the domain's grid
        await pipeline.until(lambda: _due_planned(pipeline, campaign["id"]))
        pipeline.clock.advance(at(await _next_slot(pipeline, campaign["id"])) - pipeline.clock())
        await pipeline.until(lambda: _nothing_due(pipeline, campaign["id"]))
    await planned_steps(pipeline, campaign["id"], 4)
    messages = await by_step(pipeline, campaign["id"])
    pipeline.clock.advance(at(messages[first][1]["scheduled_at"]) - pipeline.clock())

    async def first_finished() -> bool:
        return bool((await by_step(pipeline, campaign["id"]))[first][1]["status"] == "sent")

    await pipeline.until(first_finished)
    assert (await pipeline.api.get(f"/campaigns/{campaign['id']}"))[
        "status"
    ] == "running"  # the second's step 1
    more = {
        "steps": [{"template_id": bump["id"], "delay_days": 1}, {"template_id": bump["id"], "delay_days": 2}]
    }
    edit = (await pipeline.api.http.put(f"/campaigns/{campaign['id']}/steps", json=more)).json()["data"]
    assert (edit["applied_from"], edit["unchanged"]) == (2, [1])

    async def owed_planned() -> bool:
        return 2 in (await by_step(pipeline, campaign["id"]))[first]

    await pipeline.until(owed_planned, seconds=30)  # the reconcile beat plans it
    messages = await by_step(pipeline, campaign["id"])
    assert messages[first][2]["parent_message_id"] == messages[first][1]["id"]
    assert at(messages[first][2]["scheduled_at"]) >= at(messages[first][1]["sent_at"]) + timedelta(days=2)
    assert 2 not in messages[second]  # its step 1 is still to go: step 2 follows its send


async def _due_planned(pipeline: Pipeline, campaign_id: str) -> bool:
    return any(m["status"] == "planned" for m in await pipeline.messages(campaign_id))


async def _next_slot(pipeline: Pipeline, campaign_id: str) -> str:
    return min(m["scheduled_at"] for m in await pipeline.messages(campaign_id) if m["status"] == "planned")


async def _nothing_due(pipeline: Pipeline, campaign_id: str) -> bool:
    now = pipeline.clock()
    return all(
        at(m["scheduled_at"]) > now or m["status"] == "sent" for m in await pipeline.messages(campaign_id)
    )


async def test_steps_an_edit_adds_reach_a_lead_whose_last_step_was_skipped(pipeline: Pipeline) -> None:
    bump = await pipeline.api.template(name="Bump")
    campaign, lead_ids = await pipeline.campaign(
        leads=2,
        interval=3600,
        steps=[{"template_id": bump["id"], "delay_days": 1, "condition": "not_opened"}],
    )
    first = (await pipeline.api.get(f"/leads/{lead_ids[0]}"))["email"]
    for _ in range(2):  # the two first e-mails, an hour apart on the domain's grid
        await pipeline.until(lambda: _due_planned(pipeline, campaign["id"]))
        pipeline.clock.advance(at(await _next_slot(pipeline, campaign["id"])) - pipeline.clock())
        await pipeline.until(lambda: _nothing_due(pipeline, campaign["id"]))
    await planned_steps(pipeline, campaign["id"], 4)
    async with httpx.AsyncClient(base_url=pipeline.tracker_url) as tracker:
        [opened] = mails_to(pipeline, first)
        await tracker.get(pixel_of(opened), headers={"User-Agent": "Mozilla/5.0 Thunderbird"})
    messages = await by_step(pipeline, campaign["id"])
    pipeline.clock.advance(at(messages[first][1]["scheduled_at"]) - pipeline.clock())

    async def first_skipped() -> bool:
        return bool((await by_step(pipeline, campaign["id"]))[first][1]["status"] == "cancelled")

    await pipeline.until(first_skipped)  # its sequence had nothing after the skipped step
    more = {
        "steps": [
            {"template_id": bump["id"], "delay_days": 1, "condition": "not_opened"},
            {"template_id": bump["id"], "delay_days": 2},
        ]
    }
    edit = (await pipeline.api.http.put(f"/campaigns/{campaign['id']}/steps", json=more)).json()["data"]
    assert edit["applied_from"] == 2

    async def owed_planned() -> bool:
        return 2 in (await by_step(pipeline, campaign["id"]))[first]

    await pipeline.until(owed_planned, seconds=30)  # the reconcile beat plans it after the skipped step
    messages = await by_step(pipeline, campaign["id"])
    assert messages[first][2]["parent_message_id"] == messages[first][1]["id"]
    assert at(messages[first][2]["scheduled_at"]) >= at(messages[first][1]["scheduled_at"]) + timedelta(
        days=2
    )


async def test_the_step_after_a_sent_message_is_read_once_an_edit_holding_the_campaign_has_committed(
    pipeline: Pipeline,
) -> None:
    """The scheduler plans step n + 1 from `step_context`: if an edit of the steps holds the campaign then,
    the step it reads is the edited one (5 days), not the one from before the edit (2 days)."""
    bump = await pipeline.api.template(name="Bump")
    campaign, _ = await pipeline.campaign(steps=[{"template_id": bump["id"], "delay_days": 2}])
    await planned_steps(pipeline, campaign["id"], 2)  # the first e-mail sent, step 1 planned after it
    [lead] = (await by_step(pipeline, campaign["id"])).values()
    campaign_id, sent = uuid.UUID(campaign["id"]), uuid.UUID(lead[0]["id"])
    db = await asyncpg.connect(asyncpg_dsn(pipeline.settings.database_url))
    engine = create_engine(pipeline.settings.database_url, pool_size=1)
    try:
        backend: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def step_read() -> int:
            async with session_factory(engine)() as session, session.begin():
                backend.set_result(await session.scalar(text("SELECT pg_backend_pid()")))
                found = await scheduler_repository.step_context(session, sent)
                assert found is not None
                return found[2].delay_days

        async with db.transaction():  # what PUT /campaigns/{id}/steps does, held open
            await db.execute("SELECT FROM campaigns WHERE id = $1 FOR UPDATE", campaign_id)
            await db.execute("UPDATE campaign_steps SET delay_days = 5 WHERE campaign_id = $1", campaign_id)
            await db.execute("UPDATE campaigns SET steps_edited_at = now() WHERE id = $1", campaign_id)
            reading = asyncio.create_task(step_read())
            pid = await backend

            async def read_waits() -> bool:
                return bool(await db.fetchval(WAITING_ON_A_LOCK, pid))

            await pipeline.until(read_waits)
        assert await reading == 5
    finally:
        await engine.dispose()
        await db.close()
