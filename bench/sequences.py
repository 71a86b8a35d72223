"""A 10,000-lead campaign with 4 steps after its first e-mail (issue 19): planning each step as its previous
one is sent (`Scheduler.plan_next_step`, per lead) beside a bare INSERT of the same row, and the campaign's
dry-run (`POST /campaigns/{id}/dry-run`, which shows the expected steps) beside the bare planner over the
same schedules (`plan_round_robin`), in campaign mode and in recipient mode with the leads in 25 zones.

Run as `python -m bench.sequences LEADS SAMPLE` in its own process; prints JSON. SAMPLE leads go through the
four steps (every lead's first e-mail is planned by the campaign's start).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from bench.common import OFFICE_HOURS, bare_table, bench_database, percentile, raw_connection, seed_campaign
from services.api.campaigns import dry_run
from services.api.campaigns.repository import CampaignRepository
from services.api.domains.repository import DomainRepository
from services.scheduler.service import Scheduler
from shared.clock import utcnow
from shared.db import create_engine, message_store, session_factory
from shared.db.models import SendingDomain
from shared.db.slots import domain_schedules, lead_windows
from shared.planning import plan_round_robin
from shared.planning.window import Window
from shared.planning.zones import WindowMode
from shared.settings import Settings

DOMAINS, INTERVAL, STEPS, DRY_RUNS = 20, 600, 4, 20


# Where the leads of an international campaign work: Europe, the Americas, Asia and Oceania, Africa.
ZONES = (
    "Europe/Amsterdam", "Europe/Berlin", "Europe/London", "Europe/Paris", "Europe/Madrid", "Europe/Rome",
    "Europe/Stockholm", "Europe/Warsaw", "Europe/Dublin", "Europe/Lisbon", "America/New_York",
    "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Toronto", "America/Sao_Paulo",
    "America/Mexico_City", "Asia/Kolkata", "Asia/Singapore", "Asia/Tokyo", "Asia/Shanghai", "Asia/Dubai",
    "Australia/Sydney", "Pacific/Auckland", "Africa/Johannesburg",
)  # fmt: skip


async def recipient_mode(
    settings: Settings,
    session: AsyncSession,
    repo: CampaignRepository,
    campaign_id: uuid.UUID,
    lead_ids: list[uuid.UUID],
    domains: list[SendingDomain],
) -> dict[str, float]:
    """The same dry-run and bare planner with the campaign in recipient mode, its leads in 25 zones; the
    campaign is put back in campaign mode for the start that follows."""
    async with raw_connection(settings) as db:
        await db.execute(
            "UPDATE leads SET timezone = zones.zone FROM unnest($1::uuid[], $2::text[]) AS zones(id, zone)"
            " WHERE leads.id = zones.id",
            lead_ids, [ZONES[i % len(ZONES)] for i in range(len(lead_ids))],
        )  # fmt: skip
        await db.execute("UPDATE campaigns SET window_mode = 'recipient' WHERE id = $1", campaign_id)
    session.expire_all()
    timings = []
    for _ in range(DRY_RUNS):
        started = time.perf_counter()
        answer = await dry_run.campaign_dry_run(repo, str(campaign_id), settings)
        timings.append(time.perf_counter() - started)
    assert (answer["window_mode"], answer["leads_without_zone"]) == ("recipient", 0)
    campaign = await repo.require(str(campaign_id))
    window = Window.from_dict(campaign.window)
    raw = []
    for _ in range(DRY_RUNS):
        now = utcnow()
        schedules, providers = await domain_schedules(
            session, domains, window, now, settings.pace_rules, lead_ids, lock=False
        )
        windows = await lead_windows(session, window, WindowMode.RECIPIENT, lead_ids, now.year)
        started = time.perf_counter()
        plan_round_robin(lead_ids, [d.id for d in domains], schedules, now, providers, windows)
        raw.append(time.perf_counter() - started)
    async with raw_connection(settings) as db:
        await db.execute("UPDATE campaigns SET window_mode = 'campaign' WHERE id = $1", campaign_id)
    session.expire_all()
    return {
        "recipient_dry_run_p95_s": percentile(timings, 0.95),
        "recipient_raw_plan_p95_s": percentile(raw, 0.95),
    }


async def measure(settings: Settings, leads: int, sample: int) -> dict[str, float]:
    workspace, campaign_id = await seed_campaign(settings, leads, DOMAINS, INTERVAL, OFFICE_HOURS)
    async with raw_connection(settings) as db:
        template = await db.fetchval("SELECT template_id FROM campaigns WHERE id = $1", campaign_id)
        for position in range(1, STEPS + 1):
            await db.execute(
                "INSERT INTO campaign_steps VALUES ($1, $2, $3, $4, false, 'always')",
                campaign_id, position, template, 3 * position,
            )  # fmt: skip
    engine = create_engine(settings.database_url, pool_size=4)
    sessions = session_factory(engine)
    scheduler = Scheduler(sessions, settings, utcnow)
    results: dict[str, float] = {}
    try:
        # The dry-run of the campaign before its start: every lead, planned as a start now would.
        async with sessions() as session:
            repo = CampaignRepository(session, workspace)
            timings = []
            for _ in range(DRY_RUNS):
                started = time.perf_counter()
                answer = await dry_run.campaign_dry_run(repo, str(campaign_id), settings)
                timings.append(time.perf_counter() - started)
            assert answer["total_messages"] == leads
            assert [step["count"] for step in answer["steps_expected"]] == [leads] * STEPS
            results["dry_run_p95_s"] = percentile(timings, 0.95)
            campaign = await repo.require(str(campaign_id))
            named = await repo.sibling(DomainRepository).named(campaign.domains)
            domains = [named[name] for name in campaign.domains]
            window = Window.from_dict(campaign.window)
            lead_ids, _ = await repo.audience_of(campaign, window, utcnow().year)
            raw = []
            for _ in range(DRY_RUNS):
                now = utcnow()
                schedules, providers = await domain_schedules(
                    session, domains, window, now, settings.pace_rules, lead_ids, lock=False
                )
                started = time.perf_counter()
                plan_round_robin(lead_ids, [d.id for d in domains], schedules, now, providers)
                raw.append(time.perf_counter() - started)
            results["raw_plan_p95_s"] = percentile(raw, 0.95)
            results.update(await recipient_mode(settings, session, repo, campaign_id, lead_ids, domains))

        started = time.perf_counter()
        assert await scheduler.start_campaign(campaign_id) == leads
        results["start_s"] = time.perf_counter() - started

        ours: list[float] = []
        async with raw_connection(settings) as db:
            parents = [
                row["id"]
                for row in await db.fetch(
                    "SELECT id FROM messages WHERE campaign_id = $1 ORDER BY scheduled_at LIMIT $2",
                    campaign_id, sample,
                )
            ]  # fmt: skip
            for _ in range(STEPS):
                # As if each were sent at its slot: its next step is planned from there.
                await db.execute(
                    "UPDATE messages SET status = 'sent', sent_at = scheduled_at,"
                    " smtp_message_id = '<' || id || '@bench.example>' WHERE id = ANY($1)",
                    parents,
                )
                for parent in parents:
                    started = time.perf_counter()
                    assert await scheduler.plan_next_step(parent)
                    ours.append(time.perf_counter() - started)
                parents = [
                    row["id"]
                    for row in await db.fetch(
                        "SELECT id FROM messages WHERE parent_message_id = ANY($1)", parents
                    )
                ]
            rows = await db.fetch(
                f"SELECT {', '.join(message_store.COPY_COLUMNS)} FROM messages"  # noqa: S608
                " WHERE campaign_id = $1 AND step > 0",
                campaign_id,
            )
            assert len(rows) == sample * STEPS
            bare = await bare_table(db, "messages")
            insert = (
                f"INSERT INTO {bare} ({', '.join(message_store.COPY_COLUMNS)})"  # noqa: S608
                f" VALUES ({', '.join(f'${i + 1}' for i in range(len(message_store.COPY_COLUMNS)))})"
            )
            raw_inserts = []
            for row in rows:
                started = time.perf_counter()
                async with db.transaction():
                    await db.execute(insert, *(uuid.uuid4(), *tuple(row)[1:]))
                raw_inserts.append(time.perf_counter() - started)
        results["step_p50_s"] = percentile(ours, 0.5)
        results["step_p95_s"] = percentile(ours, 0.95)
        results["raw_step_p50_s"] = percentile(raw_inserts, 0.5)
        results["raw_step_p95_s"] = percentile(raw_inserts, 0.95)
    finally:
        await engine.dispose()
    return results


def main() -> None:
    leads, sample = int(sys.argv[1]), int(sys.argv[2])
    with bench_database(Settings()) as settings:
        print(json.dumps({"leads": leads, "sample": sample, **asyncio.run(measure(settings, leads, sample))}))


if __name__ == "__main__":
    main()
