"""Recording open hits in batches: every hit waits for the commit of its batch (durable before its GIF goes
out), and one transaction of a handful of statements carries all the hits that arrived meanwhile.

First opens are decided under row locks taken in id order: concurrent tracker processes that see the same
message serialise on it, so the first open is counted once however many processes race.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracker.machine import is_machine_open
from shared.planning.window import Window

log = structlog.get_logger()
MAX_BATCH = 1000
WRITERS = 2

LOCK_MESSAGES = text("""
SELECT m.id, m.campaign_id, m.sent_at, m.opened_at, m.human_opened_at, c."window"
FROM messages m JOIN campaigns c ON c.id = m.campaign_id
WHERE m.id = ANY(CAST(:ids AS uuid[])) AND m.status = 'sent'
ORDER BY m.id
FOR UPDATE OF m
""")
INSERT_EVENTS = text("""
INSERT INTO message_events (message_id, campaign_id, kind, occurred_at, is_machine, data)
SELECT m, c, 'opened', t, x, CAST(d AS jsonb)
FROM unnest(
  CAST(:m AS uuid[]), CAST(:c AS uuid[]), CAST(:t AS timestamptz[]), CAST(:x AS bool[]), CAST(:d AS text[])
) AS v(m, c, t, x, d)
""")
FIRST_OPENS = text("""
UPDATE messages SET opened_at = v.t, human_opened_at = COALESCE(human_opened_at, v.h)
FROM unnest(CAST(:m AS uuid[]), CAST(:t AS timestamptz[]), CAST(:h AS timestamptz[])) AS v(id, t, h)
WHERE messages.id = v.id
""")
BUMP_CAMPAIGNS = text("""
INSERT INTO campaign_kpis (campaign_id, shard, opens_total, opened, opened_human)
SELECT * FROM unnest(
  CAST(:c AS uuid[]), CAST(:s AS smallint[]),
  CAST(:total AS int[]), CAST(:opened AS int[]), CAST(:human AS int[])
)
ON CONFLICT (campaign_id, shard) DO UPDATE SET
  opens_total = campaign_kpis.opens_total + excluded.opens_total,
  opened = campaign_kpis.opened + excluded.opened,
  opened_human = campaign_kpis.opened_human + excluded.opened_human
""")
BUMP_DAYS = text("""
INSERT INTO campaign_kpi_days (campaign_id, day, shard, opened)
SELECT * FROM unnest(CAST(:c AS uuid[]), CAST(:day AS date[]), CAST(:s AS smallint[]), CAST(:n AS int[]))
ON CONFLICT (campaign_id, day, shard) DO UPDATE SET opened = campaign_kpi_days.opened + excluded.opened
""")


@dataclass
class Hit:
    message_id: uuid.UUID
    at: datetime
    user_agent: str
    ip: str | None
    recorded: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class OpenRecorder:
    """Up to `WRITERS` batches are written at once, each writer counting into a KPI shard of its own, so
    while one batch waits for its commit the next one is already on its way."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._waiting: list[Hit] = []
        self._arrived = asyncio.Event()
        self._idle_writers: asyncio.Queue[int] = asyncio.Queue()
        for shard in range(WRITERS):
            self._idle_writers.put_nowait(shard)

    async def record(self, hit: Hit) -> bool:
        """True once the hit is committed; False for a message that is not a sent one."""
        self._waiting.append(hit)
        self._arrived.set()
        return await hit.recorded

    async def run(self) -> None:
        """Hand whatever has arrived to the next idle writer, again and again."""
        writing: set[asyncio.Task[None]] = set()
        try:
            while True:
                await self._arrived.wait()
                shard = await self._idle_writers.get()
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                if not self._waiting:
                    self._arrived.clear()
                task = asyncio.create_task(self._write_batch(batch, shard))
                writing.add(task)
                task.add_done_callback(writing.discard)
        finally:
            await asyncio.gather(*writing, return_exceptions=True)

    async def _write_batch(self, batch: list[Hit], shard: int) -> None:
        try:
            recorded = await self._write(batch, shard)
        except Exception as error:
            log.exception("tracker.opens.write_failed", hits=len(batch))
            for hit in batch:
                if not hit.recorded.done():
                    hit.recorded.set_exception(error)
        else:
            for hit, ok in zip(batch, recorded, strict=True):
                if not hit.recorded.done():
                    hit.recorded.set_result(ok)
        finally:
            self._idle_writers.put_nowait(shard)

    async def _write(self, batch: list[Hit], shard: int) -> list[bool]:
        async with self._sessions() as session, session.begin():
            ids = list({hit.message_id for hit in batch})
            locked = await session.execute(LOCK_MESSAGES, {"ids": ids})
            rows = {row.id: row._mapping for row in locked}
            counts = tally(batch, rows, shard)
            if counts.events:
                await session.execute(INSERT_EVENTS, columns(counts.events, "m", "c", "t", "x", "d"))
            if counts.first:
                first = [(m, *times) for m, times in counts.first.items()]
                await session.execute(FIRST_OPENS, columns(first, "m", "t", "h"))
            if counts.campaigns:
                kpis = [
                    (c, s, n["opens_total"], n["opened"], n["opened_human"]) for (c, s), n in counts.campaigns
                ]
                await session.execute(BUMP_CAMPAIGNS, columns(kpis, "c", "s", "total", "opened", "human"))
            if counts.days:
                days = [(*key, n) for key, n in counts.days]
                await session.execute(BUMP_DAYS, columns(days, "c", "day", "s", "n"))
        return [hit.message_id in rows for hit in batch]


def columns(rows: list[tuple[Any, ...]], *names: str) -> dict[str, list[Any]]:
    """Rows as one array per column, for `unnest`: one statement writes them all."""
    return {name: list(values) for name, values in zip(names, zip(*rows, strict=True), strict=True)}


@dataclass
class Tally:
    events: list[tuple[Any, ...]]  # (message, campaign, at, is_machine, data as JSON)
    first: dict[uuid.UUID, tuple[datetime, datetime | None]]  # message → (opened_at, human_opened_at)
    campaigns: list[tuple[tuple[uuid.UUID, int], Counter[str]]]  # (campaign, shard) → counts, sorted
    days: list[tuple[tuple[uuid.UUID, date, int], int]]  # (campaign, local day, shard) → first opens, sorted


def _json(value: Any) -> Any:
    """A jsonb value: decoded already where the connection has a codec for it (SQLAlchemy's), else text."""
    return json.loads(value) if isinstance(value, str) else value


def tally(batch: list[Hit], rows: dict[uuid.UUID, Any], shard: int) -> Tally:
    """What a batch of hits adds, given the locked message rows: pure."""
    opened = {m: r["opened_at"] for m, r in rows.items()}
    human = {m: r["human_opened_at"] for m, r in rows.items()}
    windows: dict[uuid.UUID, Window] = {}
    events: list[tuple[Any, ...]] = []
    campaigns: dict[tuple[uuid.UUID, int], Counter[str]] = {}
    days: Counter[tuple[uuid.UUID, date, int]] = Counter()
    changed: set[uuid.UUID] = set()
    for hit in batch:
        row = rows.get(hit.message_id)
        if row is None:
            continue
        machine = is_machine_open(hit.user_agent, hit.ip, row["sent_at"], hit.at)
        data = json.dumps({"user_agent": hit.user_agent[:500], "ip": hit.ip})
        events.append((hit.message_id, row["campaign_id"], hit.at, machine, data))
        counts = campaigns.setdefault((row["campaign_id"], shard), Counter())
        counts["opens_total"] += 1
        if opened[hit.message_id] is None:
            opened[hit.message_id] = hit.at
            counts["opened"] += 1
            window = windows.get(row["campaign_id"]) or Window.from_dict(_json(row["window"]))
            windows[row["campaign_id"]] = window
            days[(row["campaign_id"], window.local_date(hit.at), shard)] += 1
            changed.add(hit.message_id)
        if not machine and human[hit.message_id] is None:
            human[hit.message_id] = hit.at
            counts["opened_human"] += 1
            changed.add(hit.message_id)
    return Tally(
        events,
        {m: (opened[m], human[m]) for m in sorted(changed)},
        sorted(campaigns.items()),
        sorted(days.items()),
    )
