"""A sending domain's health in PostgreSQL (`shared.reputation` decides): the only module that writes a
domain's state (`sending_domains.state`, its cause, reason, time and probe), its running totals
(`domain_health`) and their log (`domain_signals`).

`count` records one signal in the caller's transaction, the one that records the outcome it comes from, and
pauses the domain there when the figures cross a threshold: the tracker's complaint or bounce; the sender's
settle records its outcome and its signal in one statement (`settle_counted`), its hottest path. The figures
of a window are the totals now minus the totals before the window's first logged signal (found by index:
the first at or after the window's start in time, or the first of the last 100 sends), so recording and
judging cost a few index lookups whatever the volume.

Pausing takes the domain row FOR UPDATE: every sender's claim holds it FOR KEY SHARE until its server
accepted MAIL FROM (`message_store.CLAIM`), so once the pause is recorded no new SMTP transaction of the
domain can begin, and the `paused_at` it records is later than every one that did.

Statements are asyncpg's `$n` SQL run on a `message_store.Db` (an asyncpg connection, or a session).
"""

# ruff: noqa: S608 -- the statements are written from our own declarations, never from input

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.clock import Clock
from shared.db import message_store
from shared.db.message_store import Db
from shared.events import DomainPaused, DomainResumed
from shared.reputation import (
    DAY,
    EFFECTS,
    HOUR,
    LAST_SENDS,
    RULES,
    SENDS,
    TRANSIENT,
    Cause,
    Counts,
    DomainState,
    Figures,
    Signal,
    Thresholds,
    Verdict,
    judge,
    probe_passed,
)

COUNTED = ("sends", "hard_bounces", "complaints", "policy_rejections")
STREAKS = ("consecutive_connection_failures", "consecutive_authentication_failures", "consecutive_deferrals")
_SEND_SIGNALS = "(" + ", ".join(f"'{signal}'" for signal in sorted(SENDS)) + ")"
_SINCE = "coalesce(h.counting_since, '-infinity')"
_TRANSIENT = "(" + ", ".join(f"'{cause}'" for cause in sorted(TRANSIENT)) + ")"


def _in(states: frozenset[DomainState]) -> str:
    return "(" + ", ".join(f"'{state}'" for state in sorted(states)) + ")"


def _first_signal(alias: str, where: str, order: str) -> str:
    """LATERAL `alias`: the totals before the first logged signal of domain `h` that meets `where`."""
    return f"""LEFT JOIN LATERAL (
  SELECT {", ".join(f"s.{c}" for c in COUNTED)} FROM domain_signals AS s
  WHERE s.sending_domain_id = h.sending_domain_id AND {where}
  ORDER BY {order} LIMIT 1
) AS {alias} ON true"""


def _windows(now: str, starts: dict[str, str], source: str) -> str:
    """The columns, FROM `source` and joins of the three windows of domain `h` (with its totals now) at
    `now`: `day_*`, `hour_*` and `sends_*`, the totals when each began. A window in which no logged signal is
    seen starts at the totals of the alias `starts` names for it (`h` itself: an empty window)."""

    def since(span: timedelta) -> str:
        return f"s.at > greatest({now} - interval '{span.total_seconds():.0f} s', {_SINCE})"

    last_sends = f"s.signal IN {_SEND_SIGNALS} AND s.sends >= h.sends - {LAST_SENDS} AND s.at > {_SINCE}"
    joins = "\n".join(
        (
            _first_signal("day", since(DAY), "s.at, s.seq"),
            _first_signal("hour", since(HOUR), "s.at, s.seq"),
            _first_signal("sends", last_sends, "s.sends"),
        )
    )
    columns = ", ".join(
        f"coalesce({w}.{c}, {start}.{c}) AS {w}_{c}" for w, start in starts.items() for c in COUNTED
    )
    return f"{columns}\nFROM {source}\n{joins}"


def _streak(column: str, effect: str) -> str:
    return f"CASE {effect}::text WHEN 'add' THEN {column} + 1 WHEN 'reset' THEN 0 ELSE {column} END"


@dataclass(frozen=True)
class _Params:
    """Where a statement that records a signal finds it."""

    domain: str
    signal: str
    added: tuple[str, ...]  # what it adds to COUNTED
    streaks: tuple[str, ...]  # its effect on STREAKS
    at: str  # its time


def _numbered(first: int, at: str) -> _Params:
    """The domain, the signal, what it adds and its effect on the streaks, as parameters numbered in that
    order from `first` (`_signal_args`)."""
    n = [f"${i}" for i in range(first, first + _SIGNAL_ARGS)]
    added = tuple(f"{a}::bigint" for a in n[2 : 2 + len(COUNTED)])
    return _Params(f"{n[0]}::uuid", f"{n[1]}::text", added, tuple(n[2 + len(COUNTED) :]), at)


_SIGNAL_ARGS = 2 + len(COUNTED) + len(STREAKS)


def _signal_args(domain_id: uuid.UUID, signal: Signal) -> tuple[Any, ...]:
    """The parameters `_numbered` names."""
    effect = EFFECTS[signal]
    streaks = (effect.connection, effect.authentication, effect.deferral)  # in the order of STREAKS
    return (domain_id, signal.value, *effect.counts.as_tuple(), *(streak.value for streak in streaks))


def _recording(p: _Params, once_for: str | None) -> str:
    """The CTEs `before`, `h` and `logged` that record the signal of `p` (once for the row of CTE `once_for`,
    if given), and the SELECT of the domain's figures after it.

    `before`: the totals as this statement's snapshot sees them. The signal itself, and signals others
    committed while this statement waited for the row, are not visible to its lookups; they are all later
    than any visible one, so a window in which no signal is seen starts at these totals when this signal is in
    it: the time windows (`bt`) unless it came before the last resume, the last sends' (`bs`) when it is a
    send.

    A signal is logged no earlier than the one logged before it (`last_signal_at`): one whose time was read
    before it waited for a lock may come after a later one, and a window starts at its first signal by time.
    """
    counting = f"{p.at} > {_SINCE}"
    values = (p.domain, "1", *p.added, *(_streak("0", effect) for effect in p.streaks), p.at)
    row = f"SELECT {', '.join(values)} FROM {once_for}" if once_for else f"VALUES ({', '.join(values)})"
    recorded = f"""h
JOIN sending_domains AS d ON d.id = h.sending_domain_id
LEFT JOIN workspace_settings AS w ON w.workspace_id = d.workspace_id
CROSS JOIN before AS b
CROSS JOIN LATERAL (SELECT {_before_if(counting)}) AS bt
CROSS JOIN LATERAL (SELECT {_before_if(f"{counting} AND {p.signal} IN {_SEND_SIGNALS}")}) AS bs"""
    return f"""before AS (
  SELECT {", ".join(f"coalesce(max({c}), 0) AS {c}" for c in COUNTED)}
  FROM domain_health WHERE sending_domain_id = {p.domain}
), h AS (
  INSERT INTO domain_health AS k (sending_domain_id, signals, {", ".join(COUNTED)}, {", ".join(STREAKS)},
    last_signal_at)
  {row}
  ON CONFLICT (sending_domain_id) DO UPDATE SET signals = k.signals + 1,
    {", ".join(f"{c} = k.{c} + excluded.{c}" for c in COUNTED)},
    {", ".join(f"{c} = {_streak(f'k.{c}', e)}" for c, e in zip(STREAKS, p.streaks, strict=True))},
    last_signal_at = greatest(k.last_signal_at, excluded.last_signal_at)
  RETURNING *
), logged AS (
  INSERT INTO domain_signals (sending_domain_id, seq, at, signal, {", ".join(COUNTED)})
  SELECT sending_domain_id, signals, last_signal_at, {p.signal},
    {", ".join(f"{c} - {a}" for c, a in zip(COUNTED, p.added, strict=True))}
  FROM h WHERE {" + ".join(p.added)} > 0
)
SELECT h.*, d.workspace_id, d.domain, d.state, d.paused_cause, d.probe_message_id, d.health_thresholds,
  w.health_thresholds AS workspace_thresholds,
{_windows(p.at, {"day": "bt", "hour": "bt", "sends": "bs"}, recorded)}
"""


def _before_if(condition: str) -> str:
    return ", ".join(f"CASE WHEN {condition} THEN b.{c} ELSE h.{c} END AS {c}" for c in COUNTED)


RECORD = f"WITH {_recording(_numbered(1, f'${1 + _SIGNAL_ARGS}::timestamptz'), None)}"
# The sender's outcome and its signal in one statement (one round trip): `message_store.SETTLING`, then the
# signal recorded once if the settle recorded the outcome, after the campaign's counters were locked (the
# order of every outcome transaction); no row: it was settled before. The signal's time is the settle's ($6).
SETTLE_COUNTED = f"""{message_store.SETTLING}, counted AS (
  SELECT settled.id FROM settled, (SELECT count(*) FROM counters) AS c, (SELECT count(*) FROM per_day) AS p
), {_recording(_numbered(message_store.SETTLE_ARGS + 1, "$6::timestamptz"), "counted")}"""

# The figures of domains $1 at $2, for reading (nothing logged in a window: it is empty).
FIGURES = f"""
SELECT h.*,
{_windows("$2::timestamptz", dict.fromkeys(("day", "hour", "sends"), "h"), "domain_health AS h")}
WHERE h.sending_domain_id = ANY($1::uuid[])
"""

_PAUSE_FROM, _PAUSED = RULES["pause"]
_RESUME_FROM, _RESUMED = RULES["resume"]
# Waits for every claim of the domain still holding it (FOR KEY SHARE) to commit.
LOCK = f"SELECT state FROM sending_domains WHERE id = $1 AND state IN {_in(_PAUSE_FROM)} FOR UPDATE"
PAUSE = f"""
WITH paused AS (
  UPDATE sending_domains SET state = '{_PAUSED}', paused_cause = $2, paused_reason = $3, paused_at = $4,
    probe_message_id = NULL
  WHERE id = $1 AND state IN {_in(_PAUSE_FROM)}
  RETURNING id
)
INSERT INTO outbox (routing_key, payload) SELECT $5, $6::text::jsonb FROM paused
RETURNING id
"""
# Active again, its figures counted afresh from $2 (a resumed domain is judged on what it does from then on).
RESUME = f"""
WITH resumed AS (
  UPDATE sending_domains SET state = '{_RESUMED}', paused_cause = NULL, paused_reason = NULL,
    paused_at = NULL, probe_message_id = NULL
  WHERE id = $1 AND state IN {_in(_RESUME_FROM)}
  RETURNING id
), fresh AS (
  INSERT INTO domain_health AS k (sending_domain_id, counting_since) SELECT id, $2 FROM resumed
  ON CONFLICT (sending_domain_id) DO UPDATE SET counting_since = excluded.counting_since,
    {", ".join(f"{c} = 0" for c in STREAKS)}
)
INSERT INTO outbox (routing_key, payload) SELECT $3, $4::text::jsonb FROM resumed
RETURNING id
"""
# A transient cause's cool-down is over: message $2 is the one this paused domain may send.
CHOOSE_PROBE = f"""
UPDATE sending_domains SET probe_message_id = $2
WHERE id = $1 AND state = '{_PAUSED}' AND paused_cause IN {_TRANSIENT}
RETURNING id
"""
# The probe failed too: paused again from $3, a new cool-down.
PROBE_FAILED = f"""
UPDATE sending_domains SET paused_at = $3, probe_message_id = NULL
WHERE id = $1 AND state = '{_PAUSED}' AND probe_message_id = $2
"""
# Logged signals no window can reach any more: older than a day (and an hour's margin) and before the last
# 100 sends. At most $2 at a time.
PRUNE = f"""
WITH old AS (
  SELECT s.sending_domain_id, s.seq FROM domain_signals AS s
  JOIN domain_health AS h ON h.sending_domain_id = s.sending_domain_id
  WHERE s.at < $1::timestamptz - interval '{(DAY + HOUR).total_seconds():.0f} s'
    AND s.sends < h.sends - {LAST_SENDS}
  LIMIT $2
)
DELETE FROM domain_signals AS s USING old
WHERE s.sending_domain_id = old.sending_domain_id AND s.seq = old.seq
RETURNING s.seq
"""


@dataclass(frozen=True)
class Recorded:
    """A domain as a signal left it: its figures then, the thresholds that judge them, and its state."""

    figures: Figures
    thresholds: Thresholds
    state: DomainState
    paused_cause: Cause | None
    probe_message_id: uuid.UUID | None
    workspace_id: uuid.UUID
    domain: str


def _counts(row: Any, prefix: str = "") -> Counts:
    return Counts(*(int(row[f"{prefix}{c}"]) for c in COUNTED))


def _figures(row: Any) -> Figures:
    return Figures.from_totals(
        _counts(row),
        _counts(row, "day_"),
        _counts(row, "sends_"),
        _counts(row, "hour_"),
        *(int(row[streak]) for streak in STREAKS),
    )


def _json(value: Any) -> dict[str, Any]:
    """jsonb as either driver path returns it: decoded (the sender's codec) or as text (a session)."""
    if value is None:
        return {}
    return dict(json.loads(value) if isinstance(value, str) else value)


def thresholds_of(workspace: Any, domain: Any) -> Thresholds:
    """The thresholds of a domain: the defaults, its workspace's over them, its own over those."""
    return Thresholds.layered(_json(workspace), _json(domain))


@dataclass(frozen=True)
class Change:
    """What a signal did to its domain's state: paused it (with the verdict), resumed it after a probe, or
    restarted a failed probe's cool-down."""

    action: str  # "paused" | "resumed" | "probe_failed"
    domain: str
    verdict: Verdict | None = None

    def logged(self) -> dict[str, Any]:
        """What a log line of it says beside its action."""
        return {"domain": self.domain, "reason": self.verdict.reason if self.verdict else None}


async def record(db: Db, domain_id: uuid.UUID, signal: Signal, at: datetime) -> Recorded:
    """Add `signal` (at `at`) to the domain's totals, log it, and read its figures after it."""
    [row] = await db.fetch(RECORD, *_signal_args(domain_id, signal), at)
    return _recorded(row)


def _recorded(row: Any) -> Recorded:
    return Recorded(
        _figures(row),
        thresholds_of(row["workspace_thresholds"], row["health_thresholds"]),
        DomainState(row["state"]),
        Cause(row["paused_cause"]) if row["paused_cause"] else None,
        row["probe_message_id"],
        row["workspace_id"],
        row["domain"],
    )


async def count(
    db: Db,
    domain_id: uuid.UUID,
    signal: Signal,
    at: datetime,
    clock: Clock,
    message_id: uuid.UUID | None = None,
) -> Change | None:
    """Record `signal` of the domain (from message `message_id`, if any) in the caller's transaction, and act
    on it there (`act`)."""
    return await act(db, domain_id, await record(db, domain_id, signal, at), signal, clock, message_id)


async def settle_counted(
    db: Db, settle: tuple[Any, ...], domain_id: uuid.UUID, signal: Signal, clock: Clock, message_id: uuid.UUID
) -> Change | None:
    """The sender's outcome (`message_store.settle_args`) and its `signal` of the domain, recorded in one
    statement in the caller's transaction, and acted on there (`act`). A message settled before counts
    nothing and changes nothing."""
    rows = await db.fetch(SETTLE_COUNTED, *settle, *_signal_args(domain_id, signal))
    return await act(db, domain_id, _recorded(rows[0]), signal, clock, message_id) if rows else None


async def act(
    db: Db,
    domain_id: uuid.UUID,
    seen: Recorded,
    signal: Signal,
    clock: Clock,
    message_id: uuid.UUID | None,
) -> Change | None:
    """After `signal` (from message `message_id`, if any): an active domain whose figures cross a threshold
    is paused, a paused domain's probe resumes it or restarts its cool-down. None: the state stays."""
    if seen.state == DomainState.PAUSED:
        if message_id is None or seen.probe_message_id != message_id or seen.paused_cause is None:
            return None
        if probe_passed(seen.paused_cause, signal):
            await resume(db, domain_id, seen.workspace_id, seen.domain, clock(), automatic=True)
            return Change("resumed", seen.domain)
        await db.fetch(PROBE_FAILED, domain_id, message_id, clock())
        return Change("probe_failed", seen.domain)
    verdict = judge(seen.figures, seen.thresholds)
    if verdict is None or not await pause(db, domain_id, seen.workspace_id, seen.domain, verdict, clock):
        return None
    return Change("paused", seen.domain, verdict)


async def pause(
    db: Db, domain_id: uuid.UUID, workspace_id: uuid.UUID, name: str, verdict: Verdict, clock: Clock
) -> bool:
    """Pause an active domain, with `DomainPaused` in the outbox. Its `paused_at` is read once every claim of
    the domain that could still begin an SMTP transaction has committed. False: it was paused already."""
    if not await db.fetch(LOCK, domain_id):
        return False
    now = clock()
    event = DomainPaused(
        workspace_id=workspace_id, sending_domain_id=domain_id, domain=name, cause=verdict.cause,
        reason=verdict.reason, paused_at=now,
    )  # fmt: skip
    return bool(
        await db.fetch(
            PAUSE,
            domain_id,
            verdict.cause.value,
            verdict.reason,
            now,
            event.routing_key,
            event.model_dump_json(),
        )
    )


async def resume(
    db: Db, domain_id: uuid.UUID, workspace_id: uuid.UUID, name: str, now: datetime, automatic: bool = False
) -> bool:
    """A paused domain active again, its figures counted afresh from `now`, `DomainResumed` in the outbox.
    False: it was not paused."""
    event = DomainResumed(
        workspace_id=workspace_id, sending_domain_id=domain_id, domain=name, automatic=automatic
    )
    return bool(await db.fetch(RESUME, domain_id, now, event.routing_key, event.model_dump_json()))


async def figures(db: Db, domain_ids: list[uuid.UUID], now: datetime) -> dict[uuid.UUID, Figures]:
    """The figures of these domains at `now` (a domain that never had a signal has none)."""
    rows = await db.fetch(FIGURES, domain_ids, now)
    return {row["sending_domain_id"]: _figures(row) for row in rows}


async def choose_probe(db: Db, domain_id: uuid.UUID, message_id: uuid.UUID) -> bool:
    return bool(await db.fetch(CHOOSE_PROBE, domain_id, message_id))


async def prune(db: Db, now: datetime, most: int = 10_000) -> int:
    return len(await db.fetch(PRUNE, now, most))
