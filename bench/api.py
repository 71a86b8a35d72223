"""The api under data: a 100,000-row CSV import, a filtered page of 10,000 campaigns, and the detail of a
campaign with 1,000,000 messages. The api runs as its own process; each figure stands beside the building
block measured in the same run: an asyncpg COPY of the same leads into a bare table of the leads' shape, and
the same reads as plain asyncpg queries (the detail: the campaign row, its counter shards added up, its
timeline).

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
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import LEAD_COLUMNS, OFFICE_HOURS, bare_table, bench_database, median, raw_connection
from services.tracker.machine import TOO_SOON
from shared.clock import utcnow
from shared.db import kpi, message_store
from shared.events import MessageSent
from shared.message_states import MessageStatus
from shared.planning.window import Window
from shared.settings import Settings
from tests.support.stack import subprocess_service, with_ports

LEADS = 100_000
CAMPAIGNS = 10_000
MESSAGES = 1_000_000
ROUNDS = 50
WORDS = ["north", "south", "spring", "autumn", "saas", "retail", "agency", "q3", "q4", "webinar"]
WINDOW = json.dumps(OFFICE_HOURS)
STATUSES = ["draft", "scheduled", "running", "paused", "completed", "stopped"]
SEED_BATCH = 50_000
OPEN_BATCH = 1000
OPENED_AFTER = timedelta(hours=1)
SECOND = timedelta(seconds=1)
# The detail's reads in plain SQL: the campaign's counter shards added up, and its timeline by day.
_SUMS = ", ".join(f"coalesce(sum({name}), 0) AS {name}" for name in kpi.COUNTERS)
RAW_TOTALS = (
    f"SELECT {_SUMS}, min(first_sent_at), max(last_sent_at) FROM campaign_kpis WHERE campaign_id = $1"  # noqa: S608
)
_DAY_SUMS = ", ".join(f"sum({name}) AS {name}" for name in kpi.DAY_COUNTERS)
RAW_DAYS = f"SELECT day, {_DAY_SUMS} FROM campaign_kpi_days WHERE campaign_id = $1 GROUP BY day"  # noqa: S608


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
            columns=["id", "workspace_id", "name", "status", "template_id", "track_opens", "track_clicks",
                     "window", "domains", "audience_count", "audience_excluded"],
            records=[(uuid.uuid4(), workspace, f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i}",
                      rng.choice(STATUSES), uuid.UUID(template), True, False, WINDOW, [], 0, "{}")
                     for i in range(CAMPAIGNS)],
        )  # fmt: skip
        await db.execute("ANALYZE campaigns")


class Pipelined:
    """A `message_store.Db` that keeps every statement a transition runs, to run them later in pipelined
    batches: the store's own statements with the store's own arguments, without a round trip each.

    Each batch commits on its own, as the product's transitions do: in one long transaction, every update of
    a hot counter row would leave a version the next one has to walk past."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.calls[query].append(args)
        return []

    async def run(self, db: asyncpg.Connection, batch: int = 500) -> None:
        for query, calls in self.calls.items():
            for start in range(0, len(calls), batch):
                await db.executemany(query, calls[start : start + batch])  # a transaction of its own
        self.calls.clear()


async def seed_messages(
    settings: Settings, workspace: uuid.UUID, campaign: uuid.UUID, domain: uuid.UUID
) -> None:
    """MESSAGES sent messages over the imported leads (each lead several times), one a second up to now, and
    every fourth opened an hour after its send: written the way the product writes them, so the counters and
    the timeline the detail reads are the product's own."""
    now = utcnow()
    async with raw_connection(settings) as db:
        query = "SELECT id FROM leads WHERE workspace_id = $1"
        leads = [row["id"] for row in await db.fetch(query, workspace)]
        for first in range(0, MESSAGES, SEED_BATCH):
            ats = [now - (MESSAGES - n) * SECOND for n in range(first, min(first + SEED_BATCH, MESSAGES))]
            sends = [
                Send(uuid.uuid4(), workspace, campaign, leads[(first + i) % len(leads)], domain, at)
                for i, at in enumerate(ats)
            ]
            await plan_and_send(db, sends)
            await open_some(db, [send for send in sends[::4] if send.at + OPENED_AFTER < now])
        await db.execute("TRUNCATE outbox")  # the relay would have published the events, and removed them
        await db.execute("VACUUM ANALYZE")


@dataclass(frozen=True)
class Send:
    message_id: uuid.UUID
    workspace_id: uuid.UUID
    campaign_id: uuid.UUID
    lead_id: uuid.UUID
    domain_id: uuid.UUID
    at: datetime


async def plan_and_send(db: asyncpg.Connection, sends: list[Send]) -> None:
    """`message_store.plan` stores the messages with their planned counters; `message_store.settle` sends each
    (its counters, its day, its history and its event). They are planned as `sending` straight away: dispatch
    and claim count nothing and change nothing the detail reads."""
    window = Window.from_dict(OFFICE_HOURS)
    smtp_reply = {"smtp_code": 250, "enhanced_code": "2.0.0", "reason": ""}
    rows = [
        copy_row(id=s.message_id, workspace_id=s.workspace_id, campaign_id=s.campaign_id, lead_id=s.lead_id,
                 sending_domain_id=s.domain_id, domain_used="bench.example", scheduled_at=s.at,
                 slot_ends_at=s.at + SECOND, not_before=s.at, status=MessageStatus.SENDING, step=0,
                 retry_count=0)
        for s in sends
    ]  # fmt: skip
    settles = Pipelined()
    for s in sends:
        ids = {"workspace_id": s.workspace_id, "message_id": s.message_id, "campaign_id": s.campaign_id}
        smtp_message_id = f"<{s.message_id}.0@bench.example>"
        event = MessageSent(**ids, lead_id=s.lead_id, sent_at=s.at, smtp_message_id=smtp_message_id)
        day = window.local_date(s.at)
        await message_store.settle(
            settles, message_store.settle_args(s.message_id, "sent", s.at, day, None, smtp_reply, event)
        )
    per_day = Counter(window.local_date(s.at) for s in sends)
    async with db.transaction():
        await message_store.plan(db, sends[0].campaign_id, rows, per_day)
    await settles.run(db)


async def open_some(db: asyncpg.Connection, sends: list[Send]) -> None:
    """Each opened once by a person, OPENED_AFTER its send, recorded by `message_store.record_opens` in the
    tracker's batches."""
    for start in range(0, len(sends), OPEN_BATCH):
        hits = sends[start : start + OPEN_BATCH]
        async with db.transaction():
            ids, ats = [s.message_id for s in hits], [s.at + OPENED_AFTER for s in hits]
            people = ["Mozilla/5.0"] * len(hits), ["192.0.2.1"] * len(hits), [False] * len(hits)
            await message_store.record_opens(db, ids, ats, *people, TOO_SOON)


def copy_row(**values: Any) -> tuple[Any, ...]:
    """A row of `message_store.COPY_COLUMNS`: the columns named, None for the others."""
    assert set(values) <= set(message_store.COPY_COLUMNS), set(values) - set(message_store.COPY_COLUMNS)
    return tuple(values.get(column) for column in message_store.COPY_COLUMNS)


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
            campaign = uuid.UUID(listed["items"][0]["id"])
            started = time.perf_counter()
            await seed_messages(settings, workspace, campaign, uuid.UUID(domain["id"]))
            results["seed_messages_s"] = time.perf_counter() - started
            try:
                results["detail_p50_s"] = await timed(lambda: http.get(f"/campaigns/{campaign}"))
            except httpx.HTTPError:
                print(service.log()[-3000:], file=sys.stderr)
                raise
            detail = (await http.get(f"/campaigns/{campaign}")).json()["data"]
            assert detail["kpis"]["total_sent"] == MESSAGES, detail["kpis"]
            assert detail["kpis"]["total_opened"] == await opened(settings, campaign), detail["kpis"]

    async with raw_connection(settings) as db:
        rows = [
            (uuid.uuid4(), workspace, f"lead{i}@company{i % 5000}.example", f"First{i}", f"Last{i}",
             f"Company {i % 5000}", ["csv", "bench"], json.dumps({"city": f"City{i % 97}"}), "active")
            for i in range(LEADS)
        ]  # fmt: skip
        bare = await bare_table(db, "leads")
        started = time.perf_counter()
        await db.copy_records_to_table(bare, columns=LEAD_COLUMNS, records=rows)
        results["raw_import_s"] = time.perf_counter() - started

        async def raw_list() -> None:
            where = "workspace_id = $1 AND status = 'running' AND name ILIKE '%north%'"
            await db.fetchval(f"SELECT count(*) FROM campaigns WHERE {where}", workspace)  # noqa: S608
            await db.fetch(
                f"SELECT * FROM campaigns WHERE {where} ORDER BY created_at DESC, id LIMIT 20 OFFSET 20",  # noqa: S608
                workspace,
            )

        async def raw_detail() -> None:
            await db.fetchrow(
                "SELECT * FROM campaigns WHERE id = $1 AND workspace_id = $2", campaign, workspace
            )
            await db.fetchrow(RAW_TOTALS, campaign)
            await db.fetch(RAW_DAYS, campaign)

        results["raw_list_p50_s"] = await timed(raw_list)
        results["raw_detail_p50_s"] = await timed(raw_detail)
    return results


async def opened(settings: Settings, campaign: uuid.UUID) -> int:
    """A recount from the rows, beside the counter the detail serves."""
    async with raw_connection(settings) as db:
        return int(
            await db.fetchval(
                "SELECT count(*) FROM messages WHERE campaign_id = $1 AND opened_at IS NOT NULL", campaign
            )
        )


def main() -> None:
    global MESSAGES
    MESSAGES = int(sys.argv[1]) if len(sys.argv) > 1 else MESSAGES
    with bench_database(Settings()) as settings, contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(measure(settings))))


if __name__ == "__main__":
    main()
