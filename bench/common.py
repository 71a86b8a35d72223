"""Shared by the benchmarks: a throwaway database with a seeded workspace, and result reporting."""

from __future__ import annotations

import contextlib
import json
import statistics
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.db import asyncpg_dsn
from shared.db.migrate import drop_database, ensure_database, upgrade
from shared.messaging import remove_topology
from shared.settings import Settings

LEAD_COLUMNS = [
    "id",
    "workspace_id",
    "email",
    "first_name",
    "last_name",
    "company",
    "tags",
    "fields",
    "status",
]
ALWAYS_OPEN = {
    "timezone": "UTC",
    "days": [0, 1, 2, 3, 4, 5, 6],
    "start": "00:00",
    "end": "24:00",
    "holidays": None,
}


OFFICE_HOURS = {
    "timezone": "Europe/Amsterdam",
    "days": [0, 1, 2, 3, 4],
    "start": "08:00",
    "end": "17:00",
    "holidays": "NL",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Result:
    figure: str
    ours: float
    raw: float | None
    unit: str
    target: str
    ok: bool | None  # None: a figure to report, without a target

    @property
    def ratio(self) -> str:
        return f"{self.ours / self.raw:.2f}×" if self.raw else "—"


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def bench_database(base: Settings) -> Iterator[Settings]:
    """A fresh, migrated database and broker prefix for one benchmark, both removed afterwards."""
    import asyncio

    url = base.database_url.rsplit("/", 1)[0] + f"/maildash_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_database(url))
    upgrade(url)
    settings = base.model_copy(update={"database_url": url, "broker_prefix": f"bench-{uuid.uuid4().hex[:8]}"})
    try:
        yield settings
    finally:
        asyncio.run(drop_database(url))
        # Services declare their quorum queues; left behind, they pile up in the broker run after run.
        with contextlib.suppress(Exception):
            asyncio.run(remove_topology(settings.amqp_url, settings.broker_prefix))


async def bare_table(db: asyncpg.Connection, like: str) -> str:
    """A new table `bare_<like>` with `like`'s columns (names, types, NOT NULL, defaults, computed ones) and
    nothing else: no key, index, check, foreign key or trigger. Logged like ours, so a COPY into it writes the
    same rows and the same WAL for them: the building block a COPY into our table is measured against."""
    name = f"bare_{like}"
    await db.execute(f"CREATE TABLE {name} (LIKE {like} INCLUDING DEFAULTS INCLUDING GENERATED)")
    return name


@contextlib.asynccontextmanager
async def raw_connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        yield connection
    finally:
        await connection.close()


async def seed_campaign(
    settings: Settings,
    leads: int,
    domains: int,
    interval: int,
    window: dict[str, Any],
    smtp_port: int = 1025,
) -> tuple[uuid.UUID, uuid.UUID]:
    """A workspace, template, `domains` sending domains, `leads` leads and a scheduled campaign over them."""
    workspace, template, campaign = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    names = [f"d{i}.bench.example" for i in range(domains)]
    async with raw_connection(settings) as db, db.transaction():
        await db.execute(
            "INSERT INTO workspaces (id, name) VALUES ($1, $2)", workspace, f"bench-{workspace.hex[:6]}"
        )
        await db.execute(
            "INSERT INTO templates (id, workspace_id, name, subject, body_html) VALUES ($1, $2, 't', 's', '')",  # noqa: E501
            template,
            workspace,
        )
        await db.copy_records_to_table(
            "sending_domains",
            columns=["id", "workspace_id", "domain", "from_email", "from_name", "smtp_host", "smtp_port",
                     "smtp_security", "min_interval_seconds", "active"],
            records=[(uuid.uuid4(), workspace, n, f"s@{n}", "", "127.0.0.1", smtp_port, "none", interval,
                      True)
                     for n in names],
        )  # fmt: skip
        lead_ids = [uuid.uuid4() for _ in range(leads)]
        await db.copy_records_to_table(
            "leads",
            columns=LEAD_COLUMNS,
            records=(
                (lead, workspace, f"{lead.hex}@lead.example", "", "", "", [], "{}", "active")
                for lead in lead_ids
            ),
        )
        await db.execute(
            'INSERT INTO campaigns (id, workspace_id, name, status, template_id, track_opens, track_clicks,'
            ' "window",'
            " domains, audience_count, audience_excluded) VALUES"
            " ($1, $2, 'bench', 'scheduled', $3, true, false, $4::jsonb, $5, $6, '{}')",
            campaign, workspace, template, json.dumps(window), names, leads,
        )  # fmt: skip
        await db.copy_records_to_table(
            "campaign_leads",
            columns=["campaign_id", "position", "lead_id"],
            records=((campaign, i, lead) for i, lead in enumerate(lead_ids)),
        )
        await db.execute("INSERT INTO campaign_kpis (campaign_id) VALUES ($1)", campaign)
    return workspace, campaign
