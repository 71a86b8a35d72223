"""Recording open hits in batches: every hit waits for the commit of its batch (durable before its GIF goes
out), and one transaction of two statements carries all the hits that arrived meanwhile.

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

import asyncpg
import structlog

from services.tracker.machine import is_machine_open
from shared.db import asyncpg_dsn
from shared.planning.window import Window

log = structlog.get_logger()
MAX_BATCH = 1000
WRITERS = 2
APPLICATION_NAME = "maildash-tracker-opens"  # how the writers show in pg_stat_activity

LOCK_MESSAGES = """
SELECT m.id, m.campaign_id, m.sent_at, m.opened_at, m.human_opened_at, c."window"::text AS "window"
FROM messages m JOIN campaigns c ON c.id = m.campaign_id
WHERE m.id = ANY($1::uuid[]) AND m.status = 'sent'
ORDER BY m.id
FOR UPDATE OF m
"""
# Everything a batch adds, in one statement (one round trip): its events, its first opens, its counters.
WRITE_BATCH = """
WITH events AS (
  INSERT INTO message_events (message_id, campaign_id, kind, occurred_at, is_machine, data)
  SELECT m, c, 'opened', t, x, jsonb_build_object('user_agent', ua, 'ip', ip)
  FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::bool[], $5::text[], $6::text[])
    AS v(m, c, t, x, ua, ip)
), first_opens AS (
  UPDATE messages SET opened_at = v.t, human_opened_at = COALESCE(human_opened_at, v.h)
  FROM unnest($7::uuid[], $8::timestamptz[], $9::timestamptz[]) AS v(id, t, h)
  WHERE messages.id = v.id
), campaigns AS (
  INSERT INTO campaign_kpis (campaign_id, shard, opens_total, opened, opened_human)
  SELECT * FROM unnest($10::uuid[], $11::smallint[], $12::int[], $13::int[], $14::int[])
  ON CONFLICT (campaign_id, shard) DO UPDATE SET
    opens_total = campaign_kpis.opens_total + excluded.opens_total,
    opened = campaign_kpis.opened + excluded.opened,
    opened_human = campaign_kpis.opened_human + excluded.opened_human
)
INSERT INTO campaign_kpi_days (campaign_id, day, shard, opened)
SELECT * FROM unnest($15::uuid[], $16::date[], $17::smallint[], $18::int[])
ON CONFLICT (campaign_id, day, shard) DO UPDATE SET opened = campaign_kpi_days.opened + excluded.opened
"""


@dataclass
class Hit:
    message_id: uuid.UUID
    at: datetime
    user_agent: str
    ip: str | None
    recorded: asyncio.Future[bool] = field(init=False)  # set by `OpenRecorder.record`


class OpenRecorder:
    """Up to `WRITERS` batches are written at once, each writer on a database connection of its own and
    counting into a KPI shard of its own, so while one batch waits for its commit the next one is on its way.

    The writers speak asyncpg directly: a batch is four round trips (begin, lock, write, commit), and this is
    the tracker's hottest path."""

    def __init__(self, database_url: str) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._connections: list[asyncpg.Connection | None] = [None] * WRITERS
        self._waiting: list[Hit] = []
        self._arrived = asyncio.Event()
        self._idle_writers: asyncio.Queue[int] = asyncio.Queue()
        for shard in range(WRITERS):
            self._idle_writers.put_nowait(shard)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def record(self, hit: Hit) -> bool:
        """True once the hit is committed; False for a message that is not a sent one."""
        if self._loop is None:
            # Looked up once: `asyncio.get_running_loop()` makes a getpid() system call each time, which
            # profiling under wrk showed at 16% of the tracker's CPU on a sandboxed kernel.
            self._loop = asyncio.get_running_loop()
        hit.recorded = self._loop.create_future()
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
            for connection in self._connections:
                if connection is not None:
                    await connection.close(timeout=2)

    async def _write_batch(self, batch: list[Hit], shard: int) -> None:
        try:
            recorded = await self._write(batch, shard)
        except Exception as error:
            log.exception("tracker.opens.write_failed", hits=len(batch))
            self._drop_connection(shard)
            for hit in batch:
                if not hit.recorded.done():
                    hit.recorded.set_exception(error)
        else:
            for hit, ok in zip(batch, recorded, strict=True):
                if not hit.recorded.done():
                    hit.recorded.set_result(ok)
        finally:
            self._idle_writers.put_nowait(shard)

    async def _connection(self, shard: int) -> asyncpg.Connection:
        connection = self._connections[shard]
        if connection is None or connection.is_closed():
            connection = self._connections[shard] = await asyncpg.connect(
                self._dsn, timeout=5, server_settings={"application_name": APPLICATION_NAME}
            )
        return connection

    def _drop_connection(self, shard: int) -> None:
        """After a failed batch the connection may be broken or mid-transaction: the next one starts anew."""
        connection, self._connections[shard] = self._connections[shard], None
        if connection is not None:
            connection.terminate()

    async def _write(self, batch: list[Hit], shard: int) -> list[bool]:
        db = await self._connection(shard)
        async with db.transaction():
            locked = await db.fetch(LOCK_MESSAGES, list({hit.message_id for hit in batch}))
            rows = {row["id"]: row for row in locked}
            counts = tally(batch, rows, shard)
            if counts.events:
                kpis = [
                    (c, s, n["opens_total"], n["opened"], n["opened_human"]) for (c, s), n in counts.campaigns
                ]
                await db.execute(
                    WRITE_BATCH,
                    *columns(counts.events, 6),
                    *columns([(m, *times) for m, times in counts.first.items()], 3),
                    *columns(kpis, 5),
                    *columns([(*key, n) for key, n in counts.days], 4),
                )
        return [hit.message_id in rows for hit in batch]


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as one array per column, for `unnest`: one statement writes them all."""
    return [list(values) for values in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


@dataclass
class Tally:
    events: list[tuple[Any, ...]]  # (message, campaign, at, is_machine, user agent, ip)
    first: dict[uuid.UUID, tuple[datetime, datetime | None]]  # message → (opened_at, human_opened_at)
    campaigns: list[tuple[tuple[uuid.UUID, int], Counter[str]]]  # (campaign, shard) → counts, sorted
    days: list[tuple[tuple[uuid.UUID, date, int], int]]  # (campaign, local day, shard) → first opens, sorted


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
        events.append((hit.message_id, row["campaign_id"], hit.at, machine, hit.user_agent, hit.ip))
        counts = campaigns.setdefault((row["campaign_id"], shard), Counter())
        counts["opens_total"] += 1
        if opened[hit.message_id] is None:
            opened[hit.message_id] = hit.at
            counts["opened"] += 1
            window = windows.get(row["campaign_id"]) or Window.from_dict(json.loads(row["window"]))
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
