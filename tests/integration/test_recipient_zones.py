"""The lead's own working hours (issue 19, `window_mode: recipient`) through the real api, broker, database
and SMTP sink with a clock the test moves: leads in New York and Amsterdam across the weeks the US has changed
its clocks and Europe has not, each mailed and followed up in its own 08:00–17:00, one domain's throttle
between them. And the api's side: zones, countries and the mode round-trip, bad ones write nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import holidays
import httpx
import pytest

from tests.support.api import ApiClient
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration

AMSTERDAM, NEW_YORK = ZoneInfo("Europe/Amsterdam"), ZoneInfo("America/New_York")
OFFICE = {"timezone": "Europe/Amsterdam", "days": [0, 1, 2, 3, 4], "start": "08:00", "end": "17:00",
          "holidays": "NL"}  # fmt: skip
INTERVAL = timedelta(minutes=20)
# Friday 6 March 2026, 14:50 in Amsterdam (CET) and 08:50 in New York (EST); the US moves its clocks on
# Sunday 8 March, Europe on 29 March: on Monday New York is 5 hours behind, no longer 6.
FRIDAY = datetime(2026, 3, 6, 13, 50, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def move_to(pipeline: Pipeline, moment: datetime) -> None:
    pipeline.clock.advance(moment - pipeline.clock())


async def _count(pipeline: Pipeline, campaign_id: str, count: int) -> None:
    async def there() -> bool:
        return len(await pipeline.messages(campaign_id)) == count

    await pipeline.until(there)


async def test_recipient_zones_plan_each_lead_in_its_own_hours_across_a_clock_change_one_throttle_for_all(
    pipeline: Pipeline,
) -> None:
    api = pipeline.api
    domain = f"zones-{uuid.uuid4().hex[:8]}.example"
    await api.domain(domain, pipeline.sink.port, interval=int(INTERVAL.total_seconds()))
    tag = uuid.uuid4().hex[:6]
    dutch = await api.lead(f"anna-{tag}@lead.example", first_name="Anna", country="NL")
    american = await api.lead(f"nick-{tag}@lead.example", first_name="Nick", timezone="America/New_York")
    unplaced = await api.lead(f"uma-{tag}@lead.example", first_name="Uma", country="US")  # zones of its own
    zones = {dutch["email"]: AMSTERDAM, american["email"]: NEW_YORK, unplaced["email"]: AMSTERDAM}
    template = await api.template(body_html="<p>Hi {{ first_name }}</p><p>[{{ country }}|{{ timezone }}]</p>")
    body: dict[str, Any] = {
        "name": "In their own hours",
        "template_id": template["id"],
        "audience": {"mode": "static", "lead_ids": [dutch["id"], american["id"], unplaced["id"]]},
        "schedule": {"start_mode": "now", "window": OFFICE, "window_mode": "recipient"},
        "domains": [domain],
        "steps": [{"template_id": template["id"], "delay_days": 3}],
    }
    preview = (await api.http.post("/campaigns/dry-run", json=body)).json()["data"]
    assert (preview["window_mode"], preview["leads_without_zone"]) == ("recipient", 1)
    assert preview["total_messages"] == 3

    await move_to(pipeline, FRIDAY)
    campaign = await api.create("/campaigns", body)
    assert campaign["window_mode"] == "recipient"
    await _count(pipeline, campaign["id"], 3)
    first = {m["lead_email"]: at(m["scheduled_at"]) for m in await pipeline.messages(campaign["id"])}
    # Anna's 15:00 in Amsterdam is Nick's 09:00 in New York: he gets the domain's next slot, 09:20 there.
    assert first == {
        dutch["email"]: datetime(2026, 3, 6, 15, tzinfo=AMSTERDAM),
        american["email"]: datetime(2026, 3, 6, 9, 20, tzinfo=NEW_YORK),
        unplaced["email"]: datetime(2026, 3, 6, 15, 40, tzinfo=AMSTERDAM),  # the campaign window
    }
    for n, slot in enumerate(sorted(first.values()), 1):
        await move_to(pipeline, slot + timedelta(seconds=1))
        await _sent(pipeline, campaign["id"], n)
    await _count(pipeline, campaign["id"], 6)  # each lead's step planned as its first e-mail was sent

    messages = await pipeline.messages(campaign["id"])
    steps = {m["lead_email"]: at(m["scheduled_at"]) for m in messages if m["step"] == 1}
    sent = {m["lead_email"]: at(m["sent_at"]) for m in messages if m["step"] == 0}
    for email, step in steps.items():
        # Three calendar days later at the same local time in the lead's zone (the grid's next point: the
        # first e-mail went a moment after its slot).
        local = sent[email].astimezone(zones[email])
        due = datetime.combine(local.date() + timedelta(days=3), local.time(), zones[email])
        assert timedelta(0) <= step - due < INTERVAL, email
    # Nick's follow-up is at 09:40 in New York, now on summer time: 13:40 UTC, not Friday's 14:40 UTC.
    assert steps[american["email"]] == datetime(2026, 3, 9, 9, 40, tzinfo=NEW_YORK)
    assert steps[american["email"]].astimezone(UTC).hour == 13
    assert steps[dutch["email"]] == datetime(2026, 3, 9, 15, 20, tzinfo=AMSTERDAM)

    for n, slot in enumerate(sorted(steps.values()), 4):
        await move_to(pipeline, slot + timedelta(seconds=1))
        await _sent(pipeline, campaign["id"], n)

    mails = [m for m in pipeline.sink.received if m.rcpt_tos[0] in zones]
    assert len(mails) == 6
    given = {dutch["email"]: "[NL|]", american["email"]: "[|America/New_York]", unplaced["email"]: "[US|]"}
    for mail in mails:  # what the lead was given, for the template to read
        assert given[mail.rcpt_tos[0]] in mail.data.decode(), mail.rcpt_tos
    times = []
    for mail in mails:
        smtp_time = parsedate_to_datetime(mail.message["Date"])
        local = smtp_time.astimezone(zones[mail.rcpt_tos[0]])
        assert local.weekday() < 5
        assert time(8) <= local.time() < time(17), (mail.rcpt_tos, local)
        times.append(smtp_time)
    # One domain, one e-mail per 20 minutes across both zones: slots 20 minutes apart, sends within the grace.
    slots = sorted(at(m["scheduled_at"]) for m in await pipeline.messages(campaign["id"]))
    assert all(b - a >= INTERVAL for a, b in pairwise(slots))
    assert all(b - a >= INTERVAL - timedelta(seconds=60) for a, b in pairwise(sorted(times)))


async def test_a_resume_plans_again_in_the_lead_s_own_hours(pipeline: Pipeline) -> None:
    """Paused on Friday, resumed on Monday at 08:30 in Amsterdam, 03:30 in New York: the New York lead's
    e-mail goes at 08:00 there, not at the campaign window's next slot."""
    api = pipeline.api
    domain = f"resume-{uuid.uuid4().hex[:8]}.example"
    await api.domain(domain, pipeline.sink.port, interval=int(INTERVAL.total_seconds()))
    lead = await api.lead(f"nina-{uuid.uuid4().hex[:6]}@lead.example", timezone="America/New_York")
    template = await api.template()
    await move_to(pipeline, FRIDAY)
    campaign = await api.campaign(
        template["id"],
        [lead["id"]],
        [domain],
        schedule={"start_mode": "now", "window": OFFICE, "window_mode": "recipient"},
    )
    await _count(pipeline, campaign["id"], 1)
    path = f"/campaigns/{campaign['id']}"
    assert (await api.http.post(f"{path}/pause")).status_code == 200
    asked = datetime.now(UTC)  # the api plans a dry-run from its own clock, not the moved one
    again = (await api.http.post(f"{path}/dry-run")).json()["data"]
    answered = datetime.now(UTC)
    assert (again["window_mode"], again["leads_without_zone"]) == ("recipient", 0)
    assert at(again["slots"][0]["scheduled_at"]) in {_office_point(asked), _office_point(answered)}

    await move_to(pipeline, datetime(2026, 3, 9, 7, 30, tzinfo=UTC))
    assert (await api.http.post(f"{path}/resume")).status_code == 200

    async def moved() -> bool:
        [message] = await pipeline.messages(campaign["id"])
        return at(message["scheduled_at"]) > datetime(2026, 3, 9, tzinfo=UTC)

    await pipeline.until(moved)
    [message] = await pipeline.messages(campaign["id"])
    assert at(message["scheduled_at"]) == datetime(2026, 3, 9, 8, tzinfo=NEW_YORK)


def _office_point(after: datetime) -> datetime:
    """The first point of the 20-minute grid from 08:00 to 17:00 New York time, Monday to Friday and not on
    a US holiday, at or after `after`: a New York lead's next slot on a domain with nothing else planned."""
    calendar = holidays.country_holidays("US")
    day = after.astimezone(NEW_YORK).date()
    while True:
        if day.weekday() < 5 and day not in calendar:
            opens = datetime.combine(day, time(8), NEW_YORK)
            points = (opens + k * INTERVAL for k in range(27))  # wall-clock steps: no clock change by day
            if (point := next((p for p in points if p >= after), None)) is not None:
                return point
        day += timedelta(days=1)


async def _sent(pipeline: Pipeline, campaign_id: str, count: int) -> None:
    async def sent() -> bool:
        return sum(m["status"] == "sent" for m in await pipeline.messages(campaign_id)) == count

    await pipeline.until(sent)


async def test_zones_countries_and_the_window_mode_round_trip_and_bad_ones_write_nothing(
    api: ApiClient, api_url: str
) -> None:
    email = f"priya-{uuid.uuid4().hex[:6]}@lead.example"
    lead = await api.lead(email, timezone="Asia/Kolkata", country="in")
    assert (lead["timezone"], lead["country"]) == ("Asia/Kolkata", "IN")
    assert (await api.get(f"/leads/{lead['id']}"))["country"] == "IN"
    cleared = await api.http.patch(f"/leads/{lead['id']}", json={"timezone": None})
    assert cleared.json()["data"]["timezone"] is None

    for field, bad in (("timezone", "Mars/Olympus"), ("timezone", "../../etc/passwd"), ("country", "XX"),
                       ("country", "NLD")):  # fmt: skip
        other = f"bad-{uuid.uuid4().hex[:6]}@lead.example"
        refused = await api.http.post("/leads", json={"email": other, field: bad})
        assert refused.status_code == 422, refused.text
        answer = refused.json()
        assert (answer["data"], answer["error_code"]) == (None, "validation_error")
        assert [f["loc"] for f in answer["fields"]] == [["body", field]], answer
        assert (await api.get(f"/leads?search={other}"))["total"] == 0
        changed = await api.http.patch(f"/leads/{lead['id']}", json={field: bad})
        assert changed.status_code == 422, changed.text
    kept = await api.get(f"/leads/{lead['id']}")
    assert (kept["timezone"], kept["country"]) == (None, "IN")

    tag = uuid.uuid4().hex[:6]
    named = await api.lead(f"named-{tag}@lead.example", country="united states")
    assert named["country"] == "US"
    csv = (
        "email,timezone,country\n"
        f"ok-{tag}@lead.example,America/New_York,us\n"
        f"nozone-{tag}@lead.example,,\n"
        f"bad-{tag}@lead.example,Mars/Olympus,NL\n"
        f"dutch-{tag}@lead.example,,Netherlands\n"  # as older files carried it, for a custom field
        f"holland-{tag}@lead.example,,Holland\n"
    )
    imported = await api.http.post("/leads/import", files={"file": ("zones.csv", csv.encode(), "text/csv")})
    result = imported.json()["data"]
    assert (result["created"], [e["row"] for e in result["errors"]]) == (3, [4, 6])
    assert "timezone" in result["errors"][0]["error"]
    assert "unknown country 'Holland'" in result["errors"][1]["error"]
    [ok] = (await api.get(f"/leads?search=ok-{tag}"))["items"]
    assert (ok["timezone"], ok["country"]) == ("America/New_York", "US")
    [dutch] = (await api.get(f"/leads?search=dutch-{tag}"))["items"]
    assert (dutch["country"], dutch["fields"]) == ("NL", {})
    [blank] = (await api.get(f"/leads?search=nozone-{tag}"))["items"]
    assert (blank["timezone"], blank["country"]) == (None, None)
    assert (await api.get(f"/leads?search=bad-{tag}"))["total"] == 0

    domain = f"mode-{uuid.uuid4().hex[:8]}.example"
    await api.domain(domain, 2525)
    template = await api.template()
    wizard: dict[str, Any] = {
        "name": "Mode",
        "template_id": template["id"],
        "audience": {"mode": "static", "lead_ids": [lead["id"]]},
        "schedule": {"start_mode": "draft", "window_mode": "recipient"},
        "domains": [domain],
    }
    campaign = await api.create("/campaigns", wizard)
    assert campaign["window_mode"] == "recipient"
    assert (await api.get(f"/campaigns/{campaign['id']}"))["window_mode"] == "recipient"
    default = await api.create("/campaigns", {**wizard, "schedule": {"start_mode": "draft"}})
    assert default["window_mode"] == "campaign"
    before = (await api.get("/campaigns?search=Mode"))["total"]
    refused = await api.http.post("/campaigns", json={**wizard, "schedule": {"window_mode": "lead"}})
    assert refused.status_code == 422, refused.text
    assert [f["loc"] for f in refused.json()["fields"]] == [["body", "schedule", "window_mode"]]
    assert (await api.get("/campaigns?search=Mode"))["total"] == before

    async with httpx.AsyncClient(base_url=api_url) as client:
        document = (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert schemas["ScheduleIn"]["properties"]["window_mode"]["$ref"].endswith("/WindowMode")
    assert schemas["WindowMode"]["enum"] == ["campaign", "recipient"]
    assert {"timezone", "country"} <= set(schemas["LeadOut"]["required"])
    assert {"window_mode", "leads_without_zone"} <= set(schemas["DryRunOut"]["properties"])
