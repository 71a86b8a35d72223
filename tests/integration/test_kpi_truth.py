"""The served KPIs equal the truth recomputed from the rows, after a run that mixes every outcome."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest

from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN
from tests.support.pipeline import Pipeline
from tests.support.samples import pixel_of, postfix_dsn
from tests.support.truth import kpi_days, kpi_truth

pytestmark = pytest.mark.integration


async def test_served_kpis_equal_the_truth_after_a_mixed_run(pipeline: Pipeline, settings: Settings) -> None:
    outcomes = ["sent"] * 6 + ["smtp_bounce", "failure"]  # by lead; opens, unsubscribes and a DSN follow
    campaign, lead_ids = await pipeline.campaign(
        leads=len(outcomes),
        followup={"enabled": True, "days": 2},
        schedule={"start_mode": "draft", "window": ALWAYS_OPEN},
    )
    emails = [(await pipeline.api.get(f"/leads/{lead}"))["email"] for lead in lead_ids]
    pipeline.sink.handler.reply_to.update(
        {emails[6]: "550 5.1.1 no such user", emails[7]: "451 4.3.0 try again later"}
    )
    assert (await pipeline.api.http.post(f"/campaigns/{campaign['id']}/start")).status_code == 200

    async def settled() -> bool:
        statuses = [m["status"] for m in await pipeline.messages(campaign["id"]) if not m["is_followup"]]
        return statuses.count("sent") == 6 and "failed" in statuses and "bounced" in statuses

    await pipeline.until(settled, seconds=30)
    mails = {m.rcpt_tos[0]: m for m in pipeline.sink.received if m.rcpt_tos[0] in emails}

    async with httpx.AsyncClient(base_url=pipeline.tracker_url) as tracker:
        # A scanner right away (machine), then people an hour later, one of them twice.
        await tracker.get(pixel_of(mails[emails[0]]), headers={"User-Agent": "Barracuda Sentinel"})
        pipeline.clock.advance(timedelta(hours=1))
        for index in (0, 1, 2, 2):
            await tracker.get(
                pixel_of(mails[emails[index]]), headers={"User-Agent": "Mozilla/5.0 Thunderbird"}
            )
        await tracker.get(pixel_of(mails[emails[3]]), headers={"User-Agent": "Barracuda Sentinel"})
        unsubscribe = mails[emails[4]].message["List-Unsubscribe"].split("<")[1].split(">")[0]
        assert (await tracker.post(unsubscribe)).status_code == 200
        dsn = postfix_dsn(mails[emails[5]].mail_from, mails[emails[5]].message["Message-ID"])
        secret = {"X-Maildash-Secret": settings.inbound_secret}
        bounced = await tracker.post("/inbound/bounces", content=dsn, headers=secret)
        assert bounced.json()["data"]["recorded"] is True
        # Repeats count nothing new.
        await tracker.post(unsubscribe)
        await tracker.post("/inbound/bounces", content=dsn, headers=secret)

    pipeline.clock.advance(timedelta(days=2, hours=1))  # the follow-ups of the leads still active go out

    async def completed() -> bool:
        return (await pipeline.api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed"

    await pipeline.until(completed, seconds=30)

    truth = await kpi_truth(settings, uuid.UUID(campaign["id"]))
    per_day = await kpi_days(settings, uuid.UUID(campaign["id"]))
    served = await pipeline.api.get(f"/campaigns/{campaign['id']}")
    kpis = served["kpis"]
    at_smtp = truth.pop("at_smtp")
    assert {name: kpis[name] for name in truth} == truth
    # The mix really happened: every kind of outcome is in the truth.
    assert truth["total_sent"] == 6 + 4  # the originals, then follow-ups to 0, 1, 2 and 3
    assert (truth["total_bounced"], at_smtp, truth["total_failed"]) == (2, 1, 1)
    assert (truth["total_opened"], truth["total_opened_human"], truth["total_unsubscribed"]) == (4, 3, 1)
    assert (truth["total_planned"], truth["total_cancelled"]) == (8 + 6, 2)  # follow-ups of 4 and 5 cancelled
    assert kpis["bounce_rate"] == pytest.approx(2 / (truth["total_sent"] + at_smtp))
    # The timeline's store (served up to today; this run's clock went days ahead) adds up to the totals.
    for column in ("planned", "sent", "bounced"):
        assert sum(day[column] for day in per_day.values()) == kpis[f"total_{column}"], column
