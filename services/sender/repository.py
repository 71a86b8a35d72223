"""All SQL of the sender, spoken to asyncpg directly: sending is the hottest path of the product, and an
attempt is four round trips (begin, claim, commit; settle) instead of a dozen ORM statements.

The KPI and history writes here mirror `shared.db.kpi` and `shared.db.messages`, which the other services
use through SQLAlchemy; `tests/integration/test_kpi_truth.py` checks that both add up to the same truth.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from shared.db import asyncpg_dsn
from shared.db.kpi import shard_of
from shared.db.models import LeadStatus, MessageStatus
from shared.events import Event

APPLICATION_NAME = "maildash-sender"
# Errors after which the same statement may succeed: the database went away, or chose us as a deadlock victim.
TRANSIENT = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TransactionRollbackError,
)
COUNTED = (MessageStatus.SENT, MessageStatus.BOUNCED, MessageStatus.FAILED)  # the KPI columns SETTLE adds to


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
    parent_smtp_message_id: str | None
    # the lead
    email: str
    first_name: str
    last_name: str
    company: str
    fields: dict[str, Any]
    lead_status: str
    suppressed: bool
    # the campaign and its template
    window: dict[str, Any]
    track_opens: bool
    track_clicks: bool
    followup_attach_report: bool
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
    min_interval_seconds: int

    @property
    def may_receive(self) -> bool:
        if self.suppressed or self.lead_status in (LeadStatus.UNSUBSCRIBED, LeadStatus.BOUNCED):
            return False
        return not (self.is_followup and self.lead_status == LeadStatus.REPLIED)


# The message with all its e-mail needs, from `message` (one row of messages' columns) and `campaign`. The
# suppression check uses the unique indexes: the address itself, or its domain or any parent domain of it.
_WITH_ALL_IT_NEEDS = """
SELECT m.id, m.workspace_id, m.campaign_id, m.lead_id, m.sending_domain_id, m.domain_used, m.is_followup,
  m.retry_count, m.smtp_message_id, p.smtp_message_id AS parent_smtp_message_id,
  l.email, l.first_name, l.last_name, l.company, l.fields, l.status AS lead_status,
  EXISTS (
    SELECT FROM suppressions AS s WHERE s.workspace_id = m.workspace_id AND lower(s.email) = lower(l.email)
  ) OR EXISTS (
    SELECT FROM suppressions AS s
    WHERE s.workspace_id = m.workspace_id AND lower(s.domain) = ANY (ARRAY(
      SELECT array_to_string(labels[i:], '.') FROM generate_subscripts(labels, 1) AS i
    ))
  ) AS suppressed,
  c.window, c.track_opens, c.track_clicks, c.followup_attach_report,
  t.subject, t.body_html, t.body_text, t.followup_subject, t.followup_body_html,
  d.domain, d.from_email, d.from_name, d.smtp_host, d.smtp_port, d.smtp_username, d.smtp_password_encrypted,
  d.smtp_security, d.min_interval_seconds
FROM message AS m
CROSS JOIN campaign AS c
JOIN leads AS l ON l.id = m.lead_id
CROSS JOIN LATERAL string_to_array(substring(lower(l.email) FROM '[^@]*$'), '.') AS labels
JOIN templates AS t ON t.id = c.template_id
JOIN sending_domains AS d ON d.id = m.sending_domain_id
LEFT JOIN messages AS p ON p.id = m.parent_message_id
"""
_SMTP_MESSAGE_ID = "format('<%s.%s@%s>', m.id, m.retry_count, d.domain)"

# dispatched → sending, under a share lock on the campaign: a pause or stop waits for this transaction, and
# one already committed leaves the command without a claim.
CLAIM = f"""
WITH campaign AS (
  SELECT * FROM campaigns WHERE id = $2 AND status IN ('scheduled', 'running') FOR SHARE
), message AS (
  UPDATE messages AS m
  SET status = 'sending', claimed_at = $3, smtp_message_id = {_SMTP_MESSAGE_ID}
  FROM campaign, sending_domains AS d
  WHERE m.id = $1 AND m.status = 'dispatched' AND d.id = m.sending_domain_id
  RETURNING m.*
)
{_WITH_ALL_IT_NEEDS}"""  # noqa: S608 (made of constants only)

# What the claim would return, read without changing or locking anything: the e-mail is made from it before
# the claim, whose transaction holds the campaign's share lock and must not wait for a template meanwhile.
PEEK = f"""
WITH campaign AS (
  SELECT * FROM campaigns WHERE id = $2 AND status IN ('scheduled', 'running')
), message AS (
  SELECT m.id, m.workspace_id, m.campaign_id, m.lead_id, m.sending_domain_id, m.domain_used, m.is_followup,
    m.retry_count, m.parent_message_id, {_SMTP_MESSAGE_ID} AS smtp_message_id
  FROM messages AS m JOIN sending_domains AS d ON d.id = m.sending_domain_id
  WHERE m.id = $1 AND m.status = 'dispatched'
)
{_WITH_ALL_IT_NEEDS}"""  # noqa: S608 (made of constants only)

# The outcome in one statement: the message (guarded, so a repeat changes nothing), the campaign marked
# running, its history, its counters, a hard bounce's lead and suppression, and the event for the outbox.
# The campaign row is locked before the counter rows (the order of a stop or pause), so outcome and
# lifecycle transactions cannot deadlock.
SETTLE = """
WITH settled AS (
  UPDATE messages
  SET status = $2, last_error = $3, sent_at = CASE WHEN $9::int + $10::int > 0 THEN $6::timestamptz END,
    retry_count = retry_count + ($4::timestamptz IS NOT NULL)::int, not_before = coalesce($4, not_before)
  WHERE id = $1 AND status = 'sending'
  RETURNING id, campaign_id, lead_id, workspace_id
), running AS (
  UPDATE campaigns SET status = 'running'
  WHERE id IN (SELECT campaign_id FROM settled) AND status = 'scheduled'
  RETURNING id
), locked_first AS (
  SELECT campaign_id FROM settled, (SELECT count(*) FROM running) AS campaign_locked
), history AS (
  INSERT INTO message_events (message_id, campaign_id, kind, occurred_at, is_machine, data)
  SELECT id, campaign_id, $5, $6, false, $7 FROM settled
), counters AS (
  INSERT INTO campaign_kpis AS k (campaign_id, shard, sent, bounced, bounced_at_smtp, failed, first_sent_at,
    last_sent_at)
  SELECT campaign_id, $8, $9, $10, $10, $11, sent_at, sent_at
  FROM locked_first, (SELECT CASE WHEN $9 > 0 THEN $6 END AS sent_at) AS first_send
  WHERE $9 + $10 + $11::int > 0
  ON CONFLICT (campaign_id, shard) DO UPDATE SET
    sent = k.sent + excluded.sent,
    bounced = k.bounced + excluded.bounced,
    bounced_at_smtp = k.bounced_at_smtp + excluded.bounced_at_smtp,
    failed = k.failed + excluded.failed,
    first_sent_at = least(k.first_sent_at, excluded.first_sent_at),
    last_sent_at = greatest(k.last_sent_at, excluded.last_sent_at)
), per_day AS (
  INSERT INTO campaign_kpi_days AS k (campaign_id, day, shard, sent, bounced)
  SELECT campaign_id, $12, $8, $9, $10 FROM locked_first
  WHERE $9 + $10 > 0
  ON CONFLICT (campaign_id, day, shard) DO UPDATE SET
    sent = k.sent + excluded.sent, bounced = k.bounced + excluded.bounced
), lead_bounced AS (
  UPDATE leads SET status = 'bounced' FROM settled WHERE leads.id = settled.lead_id AND $10 > 0
), suppressed AS (
  INSERT INTO suppressions (id, workspace_id, email, reason)
  SELECT gen_random_uuid(), settled.workspace_id, lower(leads.email), left('hard bounce: ' || $3, 500)
  FROM settled JOIN leads ON leads.id = settled.lead_id
  WHERE $10 > 0
  ON CONFLICT DO NOTHING
), announced AS (
  INSERT INTO outbox (routing_key, payload) SELECT $13, $14 FROM settled
)
SELECT count(*) FROM settled
"""

CANCEL = """
WITH cancelled AS (
  UPDATE messages SET status = 'cancelled', last_error = $2, smtp_message_id = NULL
  WHERE id = $1 RETURNING campaign_id
)
INSERT INTO campaign_kpis AS k (campaign_id, shard, cancelled) SELECT campaign_id, $3, 1 FROM cancelled
ON CONFLICT (campaign_id, shard) DO UPDATE SET cancelled = k.cancelled + 1
"""


async def claim(
    db: asyncpg.Connection, message_id: uuid.UUID, campaign_id: uuid.UUID, now: datetime
) -> Claim | None:
    """None: a duplicate or a void command, or the campaign is paused or stopped; nothing to do."""
    row = await db.fetchrow(CLAIM, message_id, campaign_id, now)
    return None if row is None else Claim(**row)


async def peek(db: asyncpg.Connection, message_id: uuid.UUID, campaign_id: uuid.UUID) -> Claim | None:
    """The claim as it would be now, without making it (None: there would be nothing to claim)."""
    row = await db.fetchrow(PEEK, message_id, campaign_id)
    return None if row is None else Claim(**row)


async def release_late(db: asyncpg.Connection, message_id: uuid.UUID) -> None:
    """Past its deadline: back to planned, so the dispatcher gives it a new slot instead of sending late."""
    await db.execute(
        "UPDATE messages SET status = 'planned' WHERE id = $1 AND status = 'dispatched'", message_id
    )


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


async def defer(db: asyncpg.Connection, message_id: uuid.UUID, not_before: datetime) -> None:
    """Back to planned, to be given a new slot at or after `not_before`; not a try, so no retry is spent."""
    await db.execute(
        "UPDATE messages SET status = 'planned', not_before = $2 WHERE id = $1", message_id, not_before
    )


async def cancel(db: asyncpg.Connection, message: Claim, reason: str) -> None:
    await db.execute(CANCEL, message.id, reason, shard_of(message.id))


async def report_of(db: asyncpg.Connection, lead_id: uuid.UUID) -> tuple[str, bytes] | None:
    row = await db.fetchrow("SELECT filename, content FROM lead_reports WHERE lead_id = $1", lead_id)
    return None if row is None else (row["filename"], row["content"])


async def settle(
    db: asyncpg.Connection,
    message: Claim,
    status: MessageStatus,
    now: datetime,
    day: date,
    error: str | None,
    data: dict[str, Any],
    event: Event,
    retry_at: datetime | None = None,
) -> None:
    """sending → sent, bounced or failed; with `retry_at`, a failure that is not final: planned again, its
    slot chosen by the dispatcher at or after `retry_at`. A message settled before is left as it is."""
    final = retry_at is None
    counts = [int(final and status == counted) for counted in COUNTED]
    await db.execute(
        SETTLE, message.id, status if final else MessageStatus.PLANNED, error, retry_at, status, now, data,
        shard_of(message.id), *counts, day, event.routing_key, event.model_dump(mode="json"),
    )  # fmt: skip
