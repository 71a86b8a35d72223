"""The sender's database work, spoken to asyncpg directly: sending is the hottest path of the product, and an
attempt is four round trips (begin, claim, commit; settle) instead of a dozen ORM statements.

The message's transitions (claim, settle, release, defer, withhold) are `shared.db.message_store`'s
statements, the ones every service runs, and the paces towards receiving providers `shared.db.providers`';
the domain's turn and the lead's report are the sender's own.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.db import asyncpg_dsn, message_store, providers
from shared.message_states import LEAD_GONE, LeadStatus
from shared.planning.pacing import Pace, PaceRules, Slowdown, after_deferral
from shared.planning.slots import send_grace

APPLICATION_NAME = "maildash-sender"


async def connect_pool(database_url: str, size: int) -> asyncpg.Pool:
    """Up to `size` connections, opened on demand (the sender starts while PostgreSQL is away)."""

    async def decode_json(connection: asyncpg.Connection) -> None:
        await connection.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    async def keep_as_is(_: asyncpg.Connection) -> None:
        """Our statements leave no session state: skip asyncpg's RESET ALL round trip on every release."""

    pool = asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=0,
        max_size=size,
        init=decode_json,
        reset=keep_as_is,
        server_settings={"application_name": APPLICATION_NAME},
    )
    return await pool


@dataclass(frozen=True)
class Claim:
    """A message claimed for sending, with all its e-mail needs: one row of `CLAIM`. The lead's own fields
    keep their names, so the claim is what `shared.render.lead_variables` reads."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    campaign_id: uuid.UUID
    lead_id: uuid.UUID
    sending_domain_id: uuid.UUID
    domain_used: str
    is_followup: bool
    retry_count: int
    smtp_message_id: str
    thread_references: str | None  # the Message-IDs of the lead's earlier steps that were sent, in order
    in_reply_to: str | None  # the last of them
    # the lead
    email: str
    first_name: str
    last_name: str
    company: str
    fields: dict[str, Any]
    timezone: str | None
    country: str | None
    lead_status: str
    suppressed: bool
    # the campaign and its template (a step's own)
    window: dict[str, Any]
    track_opens: bool
    track_clicks: bool
    attach_report: bool  # its step attaches the lead's report
    first_subject: str  # the campaign's own subject (a step's `Re: …`)
    subject: str
    body_html: str
    body_text: str | None
    followup_subject: str | None
    followup_body_html: str | None
    # the sending domain
    domain: str
    from_email: str
    from_name: str
    smtp_host: str
    smtp_port: int
    smtp_username: str | None
    smtp_password_encrypted: str | None
    smtp_security: str
    has_grant: bool  # an OAuth2 grant logs in instead of the password
    min_interval_seconds: int
    dkim_selector: str | None
    dkim_rsa_private_encrypted: str | None
    dkim_ed25519_private_encrypted: str | None
    # the lead's receiving provider (None: not resolved yet) and the domain's pace towards it, if any
    recipient_domain: str
    provider: str | None
    pace_interval_seconds: int | None
    pace_slowed_at: datetime | None

    @property
    def receiving_provider(self) -> str:
        """While the recipient's domain is not resolved, it stands for its provider."""
        return self.provider or self.recipient_domain

    @property
    def may_receive(self) -> bool:
        if self.suppressed or self.lead_status in LEAD_GONE:
            return False
        return not (self.is_followup and self.lead_status == LeadStatus.REPLIED)


async def claim(
    db: asyncpg.Connection, message_id: uuid.UUID, campaign_id: uuid.UUID, now: datetime
) -> Claim | None:
    """None: a duplicate or a void command, or the campaign is paused or stopped; nothing to do."""
    row = await message_store.claim(db, message_id, campaign_id, now)
    return None if row is None else Claim(**row)


async def peek(db: asyncpg.Connection, message_id: uuid.UUID, campaign_id: uuid.UUID) -> Claim | None:
    """The claim as it would be now, without making it (None: there would be nothing to claim)."""
    row = await message_store.peek(db, message_id, campaign_id)
    return None if row is None else Claim(**row)


async def release_late(db: asyncpg.Connection, message_id: uuid.UUID) -> None:
    """Past its deadline: back to planned, so the dispatcher gives it a new slot instead of sending late."""
    await message_store.release(db, message_id)


async def take_domain_turn(
    db: asyncpg.Connection, domain_id: uuid.UUID, now: datetime, gap: timedelta
) -> datetime | None:
    """Record `now` as the domain's last send unless one began less than `gap` ago. None: this transaction
    has the turn; else when the domain may send again.

    The updated row stays locked until the claim commits, so concurrent senders of one domain queue here
    and each re-reads the time its predecessor wrote: N workers can never burst one domain."""
    if gap <= timedelta(0):
        return None
    taken = await db.fetchval(
        "UPDATE sending_domains SET last_send_at = $2 WHERE id = $1"
        " AND (last_send_at IS NULL OR last_send_at <= $2::timestamptz - $3::interval) RETURNING id",
        domain_id,
        now,
        gap,
    )
    if taken is not None:
        return None
    # A statement of its own: it sees what the sender this one waited for has committed.
    last: datetime = await db.fetchval("SELECT last_send_at FROM sending_domains WHERE id = $1", domain_id)
    return last + gap


async def mark_domain_send(db: asyncpg.Connection, domain_id: uuid.UUID, at: datetime) -> None:
    await db.execute(
        "UPDATE sending_domains SET last_send_at = greatest(last_send_at, $2) WHERE id = $1", domain_id, at
    )


async def release_refused(db: asyncpg.Connection, message_id: uuid.UUID) -> bool:
    """A claim refused because the message's sending domain is paused: back to planned, to wait for the
    domain's resume. False: refused for another reason (a duplicate command, a paused campaign)."""
    return await message_store.release_refused(db, message_id)


def slowed(message: Claim, rules: PaceRules, now: datetime) -> bool:
    """Whether the message's provider has the domain on a slower pace now (as the claim read it)."""
    if message.pace_interval_seconds is None or message.pace_slowed_at is None:
        return False
    pace = Pace(message.pace_interval_seconds, message.pace_slowed_at)
    return Slowdown(pace, message.min_interval_seconds, rules).is_slowed(now)


async def take_provider_turn(
    db: asyncpg.Connection, message: Claim, rules: PaceRules, now: datetime, grace: int | None
) -> datetime | None:
    """None: the provider's pace lets this message go now; else when it may. The pace row stays locked until
    the claim commits (a slowed provider's senders take their turns one after the other)."""
    locked = await providers.lock_pace(db, message.sending_domain_id, message.receiving_provider)
    if locked is None:
        return None
    pace, last_send_at = locked
    slowdown = Slowdown(pace, message.min_interval_seconds, rules)
    return slowdown.turn_at(last_send_at, now, send_grace(slowdown.interval_at(now), grace))


async def mark_provider_send(db: asyncpg.Connection, message: Claim, at: datetime) -> None:
    await providers.mark_sent(db, message.sending_domain_id, message.receiving_provider, at)


async def slow_down(
    db: asyncpg.Connection, message: Claim, rules: PaceRules, at: datetime, began: datetime
) -> Pace:
    """The message's provider deferred it at `at` (its attempt `began` then): the domain's pace towards the
    provider slows (in the caller's transaction)."""
    provider = message.receiving_provider
    locked = await providers.lock_pace(db, message.sending_domain_id, provider)
    pace = after_deferral(locked[0] if locked else None, message.min_interval_seconds, rules, at, began)
    await providers.record_deferral(db, message.workspace_id, message.sending_domain_id, provider, pace, at)
    return pace


async def defer(db: asyncpg.Connection, message_id: uuid.UUID, not_before: datetime) -> None:
    """Back to planned, to be given a new slot at or after `not_before`; not a try, so no retry is spent."""
    await message_store.defer(db, message_id, not_before)


async def cancel(db: asyncpg.Connection, message: Claim, reason: str) -> None:
    """Its lead may no longer receive it: cancelled instead of sent."""
    await message_store.withhold(db, message.id, reason)


async def report_of(db: asyncpg.Connection, lead_id: uuid.UUID) -> tuple[str, bytes] | None:
    row = await db.fetchrow("SELECT filename, content FROM lead_reports WHERE lead_id = $1", lead_id)
    return None if row is None else (row["filename"], row["content"])
