"""Plan and store a campaign: `Scheduler.start_campaign` beside the building block, an asyncpg COPY of the
same rows into a bare table of the messages' shape (no key, index, constraint or trigger).

Run as `python -m bench.planning LEADS DOMAINS` in its own process, so its peak RSS is its own; prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from bench.common import OFFICE_HOURS, bare_table, bench_database, median, raw_connection, seed_campaign
from services.scheduler.service import Scheduler
from shared.clock import utcnow
from shared.db import create_engine, message_store, session_factory
from shared.settings import Settings


async def measure(settings: Settings, leads: int, domains: int, rounds: int) -> dict[str, float]:
    _, campaign_id = await seed_campaign(settings, leads, domains, 1200, OFFICE_HOURS)
    engine = create_engine(settings.database_url, pool_size=2)
    scheduler = Scheduler(session_factory(engine), settings, utcnow)
    ours, raw = [], []
    peak_mb = 0.0
    async with raw_connection(settings) as db:
        bare = await bare_table(db, "messages")
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            assert await scheduler.start_campaign(campaign_id) == leads
            ours.append(time.perf_counter() - started)
            peak_mb = max(peak_mb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            async with raw_connection(settings) as db:
                rows = await db.fetch(
                    f"SELECT {', '.join(message_store.COPY_COLUMNS)} FROM messages WHERE campaign_id = $1",  # noqa: S608
                    campaign_id,
                )
                records = [tuple(r) for r in rows]
                # Unplanned again, for the next round of ours.
                await db.execute("DELETE FROM messages WHERE campaign_id = $1", campaign_id)
                await db.execute("UPDATE campaign_kpis SET planned = 0 WHERE campaign_id = $1", campaign_id)
                await db.execute("DELETE FROM campaign_kpi_days WHERE campaign_id = $1", campaign_id)
                await db.execute("VACUUM messages")
                started = time.perf_counter()
                async with db.transaction():
                    await db.copy_records_to_table(bare, records=records, columns=message_store.COPY_COLUMNS)
                raw.append(time.perf_counter() - started)
                await db.execute(f"TRUNCATE {bare}")
                del records, rows
    finally:
        await engine.dispose()
    return {"ours_s": median(ours), "raw_s": median(raw), "peak_rss_mb": peak_mb}


def main() -> None:
    leads, domains = int(sys.argv[1]), int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    with bench_database(Settings()) as settings:
        print(
            json.dumps(
                {"leads": leads, "domains": domains, **asyncio.run(measure(settings, leads, domains, rounds))}
            )
        )


if __name__ == "__main__":
    main()
