"""Receiving providers and the paces towards them, as SQL: the cache of each recipient domain's provider
(`recipient_providers`) and each sending domain's slower pace towards a provider (`provider_paces`).

The statements are asyncpg's `$n` SQL on a `message_store.Db`, like the message transitions: the sender runs
them on its asyncpg connection, the scheduler on `on_session(session)`.

A recipient domain is the lower-cased part of the lead's address after its last `@` (as the audience rules
read it); while its provider is not known, the domain stands for itself.
"""

# ruff: noqa: S608 -- the statements are written from our own declarations, never from input

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func

from shared.planning.pacing import Pace

if TYPE_CHECKING:  # message_store reads recipient domains as this module writes them
    from shared.db.message_store import Db
    from shared.providers import Resolution


def recipient_domain_sql(email: str) -> str:
    """The recipient domain of the address in SQL expression `email`."""
    return f"lower(substring({email} FROM '[^@]*$'))"


def recipient_domain(email: Any) -> ColumnElement[str]:
    """The same for SQLAlchemy: PostgreSQL's two-argument substring() is the regular-expression one."""
    return func.lower(func.substring(email, "[^@]*$"))


# The provider cache. A campaign that starts wants its recipients' domains known: new ones, and ones whose
# answer expired, are looked up by the scheduler (`services/scheduler/providers.py`).
WANT = f"""
INSERT INTO recipient_providers AS rp (domain, expires_at)
SELECT DISTINCT {recipient_domain_sql("l.email")}, $2::timestamptz
FROM campaign_leads AS cl JOIN leads AS l ON l.id = cl.lead_id
WHERE cl.campaign_id = $1
ON CONFLICT (domain) DO UPDATE SET wanted = true WHERE rp.expires_at <= $2 AND NOT rp.wanted
"""
# Due domains, taken for `$3` (another scheduler takes them over after that, should this one die).
CLAIM_DUE = """
UPDATE recipient_providers SET expires_at = $1::timestamptz + $3::interval
WHERE domain IN (
  SELECT domain FROM recipient_providers WHERE wanted AND expires_at <= $1
  ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING domain
"""
RESOLVED = """
INSERT INTO recipient_providers AS rp (domain, provider, wanted, expires_at, resolved_at, error)
SELECT domain, provider, false, expires_at, $4, NULL
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS r(domain, provider, expires_at)
ON CONFLICT (domain) DO UPDATE SET provider = excluded.provider, wanted = false,
  expires_at = excluded.expires_at, resolved_at = excluded.resolved_at, error = NULL
"""
# DNS did not answer: asked again at `$2`; what was known before stays in use meanwhile.
UNRESOLVED = """
INSERT INTO recipient_providers AS rp (domain, expires_at, error)
SELECT domain, $2, left($3, 500) FROM unnest($1::text[]) AS d(domain)
ON CONFLICT (domain) DO UPDATE SET expires_at = excluded.expires_at, error = excluded.error, wanted = true
"""


async def want_campaign(db: Db, campaign_id: uuid.UUID, now: datetime) -> None:
    await db.fetch(WANT, campaign_id, now)


async def claim_due(db: Db, now: datetime, limit: int, lease: timedelta) -> list[str]:
    return [row["domain"] for row in await db.fetch(CLAIM_DUE, now, limit, lease)]


async def save(db: Db, resolutions: Sequence[Resolution], now: datetime) -> None:
    if resolutions:
        await db.fetch(
            RESOLVED,
            [r.domain for r in resolutions],
            [r.provider for r in resolutions],
            [r.expires_at for r in resolutions],
            now,
        )


async def unresolved(db: Db, domains: Sequence[str], again_at: datetime, error: str) -> None:
    if domains:
        await db.fetch(UNRESOLVED, list(domains), again_at, error)


# Paces. The sender locks a slowed pace for its claim's transaction, so concurrent senders of one domain take
# their turns towards the provider one after the other, each seeing the last send its predecessor wrote.
LOCK_PACE = """
SELECT interval_seconds, slowed_at, last_send_at FROM provider_paces
WHERE sending_domain_id = $1 AND provider = $2 FOR UPDATE
"""
DEFERRED = """
INSERT INTO provider_paces AS p (sending_domain_id, provider, workspace_id, interval_seconds, slowed_at,
  last_send_at, deferrals)
VALUES ($1, $2, $3, $4, $5, $6, 1)
ON CONFLICT (sending_domain_id, provider) DO UPDATE SET interval_seconds = excluded.interval_seconds,
  slowed_at = excluded.slowed_at, last_send_at = greatest(p.last_send_at, excluded.last_send_at),
  deferrals = p.deferrals + 1
"""
SENT = """
UPDATE provider_paces SET last_send_at = greatest(last_send_at, $3)
WHERE sending_domain_id = $1 AND provider = $2
"""


async def lock_pace(db: Db, domain_id: uuid.UUID, provider: str) -> tuple[Pace, datetime | None] | None:
    """The stored pace and the last send towards the provider, locked until the transaction ends."""
    rows = await db.fetch(LOCK_PACE, domain_id, provider)
    if not rows:
        return None
    return Pace(rows[0]["interval_seconds"], rows[0]["slowed_at"]), rows[0]["last_send_at"]


async def record_deferral(
    db: Db, workspace_id: uuid.UUID, domain_id: uuid.UUID, provider: str, pace: Pace, at: datetime
) -> None:
    """The provider deferred an attempt at `at`: the new pace counts from it."""
    await db.fetch(DEFERRED, domain_id, provider, workspace_id, pace.interval_seconds, pace.slowed_at, at)


async def mark_sent(db: Db, domain_id: uuid.UUID, provider: str, at: datetime) -> None:
    await db.fetch(SENT, domain_id, provider, at)
