"""The api under data: a 100,000-row CSV import, a filtered page of 10,000 campaigns, and the detail of a
campaign with 1,000,000 messages. The api runs as its own process; each figure stands beside the building
block measured in the same run: asyncpg COPY of the same leads, and the same reads as plain asyncpg queries.

Run as `python -m bench.api`; prints JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import LEAD_COLUMNS, OFFICE_HOURS, bench_database, median, raw_connection
from shared.settings import Settings
from tests.support.stack import subprocess_service, with_ports

LEADS = 100_000
CAMPAIGNS = 10_000
MESSAGES = 1_000_000
ROUNDS = 50
WORDS = ["north", "south", "spring", "autumn", "saas", "retail", "agency", "q3", "q4", "webinar"]
WINDOW = json.dumps(OFFICE_HOURS)
STATUSES = ["draft", "scheduled", "running", "paused", "completed", "stopped"]


def leads_csv(count: int) -> bytes:
    lines = ["email,first_name,last_name,company,tags,city"]
    lines += [f"lead{i}@company{i % 5000}.example,First{i},Last{i},Company {i % 5000},csv;bench,City{i % 97}"
              for i in range(count)]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


async def timed(call: Any, rounds: int = ROUNDS) -> float:
    """Median seconds of `rounds` calls, after two warm-up calls."""
    for _ in range(2):
        await call()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return median(samples)


async def seed_campaigns(settings: Settings, workspace: uuid.UUID, template: str) -> None:
    rng = random.Random(7)
    async with raw_connection(settings) as db:
        await db.copy_records_to_table(
            "campaigns",
            columns=["id", "workspace_id", "name", "status", "template_id", "followup_enabled",
                     "followup_days", "followup_attach_report", "track_opens", "track_clicks", "window",
                     "domains", "audience_count", "audience_excluded"],
            records=[(uuid.uuid4(), workspace, f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}",
                      rng.choice(STATUSES), uuid.UUID(template), False, 3, False, True, False, WINDOW, [], 0,
                      "{}")
                     for i in range(CAMPAIGNS)],
        )  # fmt: skip
        await db.execute("ANALYZE campaigns")


async def seed_messages(settings: Settings, workspace: uuid.UUID, campaign: str, domain: str) -> None:
    """1,000,000 sent messages over the imported leads, and counters to match, generated in the database."""
    async with raw_connection(settings) as db:
        await db.execute(
            "INSERT INTO messages (id, workspace_id, campaign_id, lead_id, sending_domain_id, domain_used,"
            " scheduled_at, slot_ends_at, not_before, status, sent_at, is_followup, retry_count)"
            " SELECT gen_random_uuid(), $1, $2, l.id, $3, 'bench.example', t, t, t, 'sent', t, false, 0"
            " FROM (SELECT id, row_number() OVER () AS n FROM leads WHERE workspace_id = $1) l,"
            " generate_series(0, $4::int / $5::int - 1) AS k,"
            " LATERAL (SELECT now() - (k * $5::int + l.n) * interval '1 second') AS s(t)",
            workspace, uuid.UUID(campaign), uuid.UUID(domain), MESSAGES, LEADS,
        )  # fmt: skip
        await db.execute(
            "INSERT INTO campaign_kpis"
            " (campaign_id, shard, planned, sent, opened, first_sent_at, last_sent_at)"
            " SELECT $1, s, $2::int / 16, $2::int / 16, $2::int / 64, now() - interval '12 days', now()"
            " FROM generate_series(0, 15) s"
            " ON CONFLICT (campaign_id, shard) DO UPDATE SET sent = excluded.sent",
            uuid.UUID(campaign), MESSAGES,
        )  # fmt: skip
        await db.execute(
            "INSERT INTO campaign_kpi_days (campaign_id, day, shard, planned, sent)"
            " SELECT $1, current_date - d, s, 1000, 1000"
            " FROM generate_series(0, 59) d, generate_series(0, 15) s",
            uuid.UUID(campaign),
        )
        await db.execute("ANALYZE")


async def measure(settings: Settings) -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as logs:
        async with (
            subprocess_service("api", with_ports(settings, "api"), Path(logs)) as service,
            # uvicorn drops idle connections after 5 s: never reuse one that old (the seeding takes minutes).
            httpx.AsyncClient(
                base_url=f"{service.url}/api/v1", timeout=600, limits=httpx.Limits(keepalive_expiry=2)
            ) as http,
        ):
            token = await http.post(
                "/auth/token", data={"username": "admin@example.com", "password": "admin"}
            )
            http.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            workspace = uuid.UUID((await http.get("/auth/me")).json()["data"]["workspace"]["id"])

            csv = leads_csv(LEADS)
            started = time.perf_counter()
            imported = await http.post("/leads/import", files={"file": ("leads.csv", csv, "text/csv")})
            results["import_s"] = time.perf_counter() - started
            assert imported.json()["data"]["created"] == LEADS, imported.text[:500]

            template = await http.post("/templates", json={"name": "t", "subject": "s", "body_html": "b"})
            template_id = template.json()["data"]["id"]
            await seed_campaigns(settings, workspace, template_id)
            filtered = "/campaigns?status=running&search=north&page=2&page_size=20"
            results["list_p50_s"] = await timed(lambda: http.get(filtered))
            listed = (await http.get(filtered)).json()["data"]
            assert listed["items"], listed

            smtp = {"host": "127.0.0.1", "port": 1025, "security": "none"}
            body = {"domain": "bench.example", "from_email": "s@bench.example", "smtp": smtp}
            domain = (await http.post("/domains", json=body)).json()["data"]
            campaign = listed["items"][0]["id"]
            await seed_messages(settings, workspace, campaign, domain["id"])
            try:
                results["detail_p50_s"] = await timed(lambda: http.get(f"/campaigns/{campaign}"))
            except httpx.HTTPError:
                print(service.log()[-3000:], file=sys.stderr)
                raise
            detail = (await http.get(f"/campaigns/{campaign}")).json()["data"]
            assert detail["kpis"]["total_sent"] == MESSAGES, detail["kpis"]

    async with raw_connection(settings) as db:
        raw_workspace = uuid.uuid4()
        await db.execute("INSERT INTO workspaces (id, name) VALUES ($1, 'raw')", raw_workspace)
        rows = [
            (uuid.uuid4(), raw_workspace, f"lead{i}@company{i % 5000}.example", f"First{i}", f"Last{i}",
             f"Company {i % 5000}", ["csv", "bench"], json.dumps({"city": f"City{i % 97}"}), "active")
            for i in range(LEADS)
        ]  # fmt: skip
        started = time.perf_counter()
        await db.copy_records_to_table("leads", columns=LEAD_COLUMNS, records=rows)
        results["raw_import_s"] = time.perf_counter() - started

        async def raw_list() -> None:
            where = "workspace_id = $1 AND status = 'running' AND name ILIKE '%north%'"
            await db.fetchval(f"SELECT count(*) FROM campaigns WHERE {where}", workspace)  # noqa: S608
            await db.fetch(
                f"SELECT * FROM campaigns WHERE {where} ORDER BY created_at DESC, id LIMIT 20 OFFSET 20",  # noqa: S608
                workspace,
            )

        results["raw_list_p50_s"] = await timed(raw_list)
        campaign_id = uuid.UUID(campaign)
        results["raw_detail_p50_s"] = await timed(
            lambda: db.fetchrow("SELECT * FROM campaigns WHERE id = $1", campaign_id)
        )
    return results


def main() -> None:
    global MESSAGES
    MESSAGES = int(sys.argv[1]) if len(sys.argv) > 1 else MESSAGES
    with bench_database(Settings()) as settings, contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(measure(settings))))


if __name__ == "__main__":
    main()
