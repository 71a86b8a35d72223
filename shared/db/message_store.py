"""Every message transition of `shared.message_states.TRANSITIONS` as SQL, written once: the only module that
writes `messages.status`, the KPI counters (`campaign_kpis`, `campaign_kpi_days`) and `message_events`.

Each transition is one statement (or, where it touches other messages, one per kind of row), guarded by the
statuses it leaves, so a repeated event changes nothing and counts nothing twice. The campaign row is locked
before the counter rows, the order a stop or pause uses, so outcome and lifecycle transactions cannot
deadlock.

The statements are asyncpg's `$n` SQL and run on a `Db`: an asyncpg connection on the hot paths (the sender,
the tracker's open writer), or `on_session(session)` elsewhere, which hands the same statement to the asyncpg
driver under SQLAlchemy, inside the session's transaction (SQLAlchemy's asyncpg paramstyle is `$n` too).
JSON goes in as text, since the two paths decode jsonb differently.
"""

# ruff: noqa: S608 -- the statements are written from our own declarations, never from input

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from shared import tracing
from shared.db.kpi import shard_of
from shared.db.providers import recipient_domain_sql
from shared.events import (
    CampaignCompleted,
    Event,
    LeadComplained,
    LeadReplied,
    LeadUnsubscribed,
    MessageBounced,
    MessageClicked,
    MessageOpened,
    SendMessage,
)
from shared.lifecycle import RULES, SENDS, Action
from shared.message_states import TRANSITIONS, UNFINISHED, LeadStatus, MessageStatus
from shared.reputation import DomainState
from shared.sequences import SKIPPED


class Db(Protocol):
    """What a transition runs on: an asyncpg connection, or a session through `on_session`."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


class SessionDb:
    """A SQLAlchemy session's transaction as a `Db`."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        result = await (await self._session.connection()).exec_driver_sql(query, args)
        return [row._mapping for row in result] if result.returns_rows else []

    async def copy_records_to_table(
        self, table: str, *, records: Sequence[tuple[Any, ...]], columns: Sequence[str]
    ) -> None:
        """COPY on the driver connection: call it after a statement of this transaction, which began it."""
        raw = await (await self._session.connection()).get_raw_connection()
        await raw.driver_connection.copy_records_to_table(table, records=records, columns=columns)  # type: ignore[union-attr]


def on_session(session: AsyncSession) -> SessionDb:
    return SessionDb(session)


class CopyDb(Db, Protocol):
    async def copy_records_to_table(
        self, table: str, *, records: Sequence[tuple[Any, ...]], columns: Sequence[str]
    ) -> None: ...


def _in(statuses: Iterable[str]) -> str:
    return "(" + ", ".join(f"'{status}'" for status in sorted(statuses)) + ")"


def _guard(name: str) -> str:
    return f"status IN {_in(TRANSITIONS[name].sources)}"


def _to(name: str) -> str:
    target = TRANSITIONS[name].target
    assert target is not None, name
    return f"'{target}'"


def _campaign(action: Action, campaign_ids: str) -> str:
    """The campaign transition a message transition causes, as an UPDATE for a CTE (shared.lifecycle)."""
    sources, target = RULES[action]
    return (
        f"UPDATE campaigns SET status = '{target}' WHERE id IN ({campaign_ids}) AND status IN {_in(sources)}"
        " RETURNING id"
    )


def _counter_upsert(key: str, columns: Sequence[str]) -> str:
    """ON CONFLICT clause adding `columns` to the existing row."""
    added = ", ".join(f"{c} = k.{c} + excluded.{c}" for c in columns)
    return f"ON CONFLICT ({key}) DO UPDATE SET {added}"


KPIS = "campaign_id, shard"
DAYS = "campaign_id, day, shard"
HISTORY_COLUMNS = "message_id, campaign_id, kind, occurred_at, is_machine, data"


def _history(source: str, name: str, at: str, data: str) -> str:
    """CTE `history`: transition `name`'s event row for each message of CTE `source` (id, campaign_id)."""
    return f"""history AS (
  INSERT INTO message_events ({HISTORY_COLUMNS})
  SELECT id, campaign_id, '{TRANSITIONS[name].history}', {at}, false, {data}::text::jsonb FROM {source}
)"""


def _counted(source: str, counter: str, shard: str, day: str) -> str:
    """CTEs `counters` and `per_day`: `counter` raised by one for each row of CTE `source` (campaign_id), in
    the campaign's shard `shard` and on the local day `day`."""
    return f"""counters AS (
  INSERT INTO campaign_kpis AS k (campaign_id, shard, {counter}) SELECT campaign_id, {shard}, 1 FROM {source}
  {_counter_upsert(KPIS, [counter])}
), per_day AS (
  INSERT INTO campaign_kpi_days AS k (campaign_id, day, shard, {counter})
  SELECT campaign_id, {day}, {shard}, 1 FROM {source}
  {_counter_upsert(DAYS, [counter])}
)"""


# plan: new planned messages, counted on their slots' days
COPY_COLUMNS = (
    "id", "workspace_id", "campaign_id", "lead_id", "sending_domain_id", "domain_used", "scheduled_at",
    "slot_ends_at", "not_before", "status", "step", "parent_message_id", "retry_count", "last_error",
)  # fmt: skip
PLANNED_DAYS = f"""
INSERT INTO campaign_kpi_days AS k (campaign_id, day, shard, planned)
SELECT $1, day, 0, n FROM unnest($2::date[], $3::int[]) AS d(day, n) WHERE n <> 0
{_counter_upsert(DAYS, ["planned"])}
"""
PLANNED = f"""
WITH days AS ({PLANNED_DAYS})
INSERT INTO campaign_kpis AS k (campaign_id, shard, planned, failed) VALUES ($1, 0, $4, $5)
{_counter_upsert(KPIS, ["planned", "failed"])}
"""
# A new campaign's counters start at zero.
OPEN_COUNTERS = "INSERT INTO campaign_kpis (campaign_id, shard) VALUES ($1, 0)"

# dispatch, release, defer, reslot: moving towards and away from a sender
# $2: the commands in the order of $1, written to the outbox for the messages this statement dispatched, each
# in the trace context its campaign was planned in.
DISPATCH = f"""
WITH dispatched AS (
  UPDATE messages SET status = {_to("dispatch")}
  WHERE id = ANY($1::uuid[]) AND {_guard("dispatch")} RETURNING id, campaign_id
)
INSERT INTO outbox (routing_key, payload, trace_context)
SELECT $3, c.payload::jsonb, campaigns.trace_context
FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS c(id, payload, n) JOIN dispatched USING (id)
  JOIN campaigns ON campaigns.id = dispatched.campaign_id
ORDER BY c.n
"""
_RELEASE = f"UPDATE messages SET status = {_to('release')} WHERE {_guard('release')}"
RELEASE_ONE = f"{_RELEASE} AND id = $1"
RELEASE_CAMPAIGN = f"{_RELEASE} AND campaign_id = $1"
RELEASE_LOST = f"{_RELEASE} AND scheduled_at < $1 RETURNING id"
RELEASE_OF_DOMAIN = f"{_RELEASE} AND sending_domain_id = $1"
# A command the sender refused because its domain is paused (and the message is not its probe).
_PAUSED_DOMAINS = f"SELECT id FROM sending_domains WHERE state = '{DomainState.PAUSED}'"
RELEASE_REFUSED = f"""{_RELEASE} AND id = $1
  AND sending_domain_id IN ({_PAUSED_DOMAINS} AND probe_message_id IS DISTINCT FROM $1) RETURNING id"""
DEFER = f"UPDATE messages SET status = {_to('defer')}, not_before = $2 WHERE id = $1 AND {_guard('defer')}"
# ... and a claim given back ($3 its `claimed_at`): a claim since made by another sender is left alone.
GIVE_BACK = f"{DEFER} AND claimed_at = $3 RETURNING id"
# A re-plan that finds no slot within the horizon: failed, with the reason ($2).
NO_SLOT = f"""
WITH failed AS (
  UPDATE messages SET status = {_to("no_slot")}, last_error = $2
  WHERE id = $1 AND {_guard("no_slot")} RETURNING campaign_id
)
INSERT INTO campaign_kpis AS k (campaign_id, shard, failed) SELECT campaign_id, $3, 1 FROM failed
{_counter_upsert(KPIS, ["failed"])}
RETURNING campaign_id
"""
# Messages about to be re-planned together give up their slots first (an empty range overlaps nothing), so
# that one moved earlier in the batch may take a slot another one still held.
VACATE = f"UPDATE messages SET slot_ends_at = scheduled_at WHERE id = ANY($1::uuid[]) AND {_guard('reslot')}"
# The planned count moves from the old slot's local day ($4) to the new one's ($5). The slot is on domain $6
# (named $7): its own, or another one of its campaign's when its own paused.
RESLOT = f"""
WITH moved AS (
  UPDATE messages SET status = {_to("reslot")}, scheduled_at = $2, slot_ends_at = $3, sending_domain_id = $6,
    domain_used = $7
  WHERE id = $1 AND {_guard("reslot")} RETURNING campaign_id
)
INSERT INTO campaign_kpi_days AS k (campaign_id, day, shard, planned)
SELECT campaign_id, day, 0, n FROM moved, (VALUES ($4::date, -1), ($5::date, 1)) AS d(day, n) WHERE $4 <> $5
{_counter_upsert(DAYS, ["planned"])}
"""

# claim: dispatched → sending
# The message with all its e-mail needs, from `message` (one row of messages' columns) and `campaign`. The
# suppression check uses the unique indexes: the address itself, or its domain or any parent domain of it.
# The lead's receiving provider (its domain while not resolved) and the domain's pace towards it, if any.
# A step of a sequence takes its step's template (`t`) and report setting; `first_subject` is the campaign's
# own (`Re: …`). Its thread is the `Message-ID` of each earlier step of the lead that was sent, in order.
_WITH_ALL_IT_NEEDS = f"""
SELECT m.id, m.workspace_id, m.campaign_id, m.lead_id, m.sending_domain_id, m.domain_used, m.is_followup,
  m.retry_count, m.smtp_message_id, thread.refs AS thread_references, thread.last AS in_reply_to,
  l.email, l.first_name, l.last_name, l.company, l.fields, l.timezone, l.country, l.status AS lead_status,
  EXISTS (
    SELECT FROM suppressions AS s WHERE s.workspace_id = m.workspace_id AND lower(s.email) = lower(l.email)
  ) OR EXISTS (
    SELECT FROM suppressions AS s
    WHERE s.workspace_id = m.workspace_id AND lower(s.domain) = ANY (ARRAY(
      SELECT array_to_string(labels[i:], '.') FROM generate_subscripts(labels, 1) AS i
    ))
  ) AS suppressed,
  c.window, c.track_opens, c.track_clicks, coalesce(s.attach_report, false) AS attach_report,
  ft.subject AS first_subject, t.subject, t.body_html, t.body_text, t.followup_subject, t.followup_body_html,
  d.domain, d.from_email, d.from_name, d.smtp_host, d.smtp_port, d.smtp_username, d.smtp_password_encrypted,
  d.smtp_security, d.min_interval_seconds, d.dkim_selector, d.dkim_rsa_private_encrypted,
  d.dkim_ed25519_private_encrypted,
  EXISTS (SELECT FROM oauth_accounts AS g WHERE g.sending_domain_id = d.id) AS has_grant,
  r.domain AS recipient_domain, rp.provider, pp.interval_seconds AS pace_interval_seconds,
  pp.slowed_at AS pace_slowed_at
FROM message AS m
CROSS JOIN campaign AS c
JOIN leads AS l ON l.id = m.lead_id
CROSS JOIN LATERAL (SELECT {recipient_domain_sql("l.email")} AS domain) AS r
CROSS JOIN LATERAL string_to_array(r.domain, '.') AS labels
LEFT JOIN campaign_steps AS s ON s.campaign_id = m.campaign_id AND s.position = m.step
JOIN templates AS t ON t.id = coalesce(s.template_id, c.template_id)
JOIN templates AS ft ON ft.id = c.template_id
JOIN sending_domains AS d ON d.id = m.sending_domain_id
CROSS JOIN LATERAL (
  SELECT string_agg(o.smtp_message_id, ' ' ORDER BY o.step) AS refs,
    (array_agg(o.smtp_message_id ORDER BY o.step DESC))[1] AS last
  FROM messages AS o
  WHERE o.lead_id = m.lead_id AND o.campaign_id = m.campaign_id AND o.step < m.step
    AND o.status = '{MessageStatus.SENT}'
) AS thread
LEFT JOIN recipient_providers AS rp ON rp.domain = r.domain
LEFT JOIN provider_paces AS pp
  ON pp.sending_domain_id = m.sending_domain_id AND pp.provider = coalesce(rp.provider, r.domain)
"""
_SMTP_MESSAGE_ID = "format('<%s.%s@%s>', m.id, m.retry_count, d.domain)"

# Under a share lock on the campaign, then a key-share lock on its sending domain, which is active (or
# paused, and this is its probe): a pause or stop of the campaign, or a pause of the domain
# (`shared.db.domain_health`), waits for this transaction, and one already committed leaves the command
# without a claim. A key-share lock leaves the domain's other claims and its turn (`last_send_at`) free.
CLAIM = f"""
WITH campaign AS (
  SELECT * FROM campaigns WHERE id = $2 AND status IN {_in(SENDS)} FOR SHARE
), domain AS (
  SELECT d.id, d.domain FROM campaign, messages AS m JOIN sending_domains AS d ON d.id = m.sending_domain_id
  WHERE m.id = $1 AND (d.state = '{DomainState.ACTIVE}' OR d.probe_message_id = m.id)
  FOR KEY SHARE OF d
), message AS (
  UPDATE messages AS m
  SET status = {_to("claim")}, claimed_at = $3, smtp_message_id = {_SMTP_MESSAGE_ID}
  FROM domain AS d
  WHERE m.id = $1 AND m.{_guard("claim")} AND d.id = m.sending_domain_id
  RETURNING m.*
)
{_WITH_ALL_IT_NEEDS}"""

# What the claim would return, read without changing or locking anything: the e-mail is made from it before
# the claim, whose transaction holds the campaign's share lock and must not wait for a template meanwhile.
PEEK = f"""
WITH campaign AS (
  SELECT * FROM campaigns WHERE id = $2 AND status IN {_in(SENDS)}
), message AS (
  SELECT m.id, m.workspace_id, m.campaign_id, m.lead_id, m.sending_domain_id, m.domain_used, m.is_followup,
    m.step, m.retry_count, m.parent_message_id, {_SMTP_MESSAGE_ID} AS smtp_message_id
  FROM messages AS m JOIN sending_domains AS d ON d.id = m.sending_domain_id
  WHERE m.id = $1 AND m.{_guard("claim")}
)
{_WITH_ALL_IT_NEEDS}"""

# settle: sending → sent | bounced | failed | planned (retry, rejected, deferred)
SETTLES = ("sent", "bounced", "failed", "retry", "rejected", "deferred")
assert len({TRANSITIONS[name].sources for name in SETTLES}) == 1
assert {TRANSITIONS[name].campaign for name in SETTLES} == {"first_send"}
# The outcome in one statement: the message, the campaign's first send, its history, its counters, a hard
# bounce's lead and suppression, and the event for the outbox (none: $18 null). $2 is the target status, $4
# the new `not_before` of one planned again and $20 whether that spends a try, $9–$12 the counters, $14–$15
# the day's, $16 the lead's new status, $17 whether its address is suppressed. `SETTLING`'s CTEs also begin
# the sender's statement that counts the outcome towards its domain (`domain_health.SETTLE_COUNTED`), which
# reads `counters` and `per_day` to lock the domain's figures after them, as every outcome transaction does.
SETTLE_ARGS = 20
SETTLING = f"""
WITH settled AS (
  UPDATE messages
  SET status = $2, last_error = $3, sent_at = CASE WHEN $9::int + $11::int > 0 THEN $6::timestamptz END,
    retry_count = retry_count + $20::int, not_before = coalesce($4, not_before)
  WHERE id = $1 AND {_guard("sent")}
  RETURNING id, campaign_id, lead_id, workspace_id
), running AS (
  {_campaign("first_send", "SELECT campaign_id FROM settled")}
), locked_first AS (
  SELECT campaign_id FROM settled, (SELECT count(*) FROM running) AS campaign_locked
), history AS (
  INSERT INTO message_events ({HISTORY_COLUMNS})
  SELECT id, campaign_id, $5, $6, false, $7::text::jsonb FROM settled
), counters AS (
  INSERT INTO campaign_kpis AS k (campaign_id, shard, sent, bounced, bounced_at_smtp, failed, first_sent_at,
    last_sent_at)
  SELECT campaign_id, $8, $9, $10, $11, $12, sent_at, sent_at
  FROM locked_first, (SELECT CASE WHEN $9 > 0 THEN $6 END AS sent_at) AS first_send
  WHERE $9 <> 0 OR $10 <> 0 OR $11 <> 0 OR $12::int <> 0
  {_counter_upsert(KPIS, ["sent", "bounced", "bounced_at_smtp", "failed"])},
    first_sent_at = least(k.first_sent_at, excluded.first_sent_at),
    last_sent_at = greatest(k.last_sent_at, excluded.last_sent_at)
  RETURNING 1
), per_day AS (
  INSERT INTO campaign_kpi_days AS k (campaign_id, day, shard, sent, bounced)
  SELECT campaign_id, $13, $8, $14, $15 FROM locked_first
  WHERE $14 <> 0 OR $15::int <> 0
  {_counter_upsert(DAYS, ["sent", "bounced"])}
  RETURNING 1
), lead_changed AS (
  UPDATE leads SET status = $16::text FROM settled WHERE leads.id = settled.lead_id AND $16::text IS NOT NULL
), suppressed AS (
  INSERT INTO suppressions (id, workspace_id, email, reason)
  SELECT gen_random_uuid(), settled.workspace_id, lower(leads.email), left('hard bounce: ' || $3, 500)
  FROM settled JOIN leads ON leads.id = settled.lead_id
  WHERE $17::bool
  ON CONFLICT DO NOTHING
), announced AS (
  INSERT INTO outbox (routing_key, payload)
  SELECT $18, $19::text::jsonb FROM settled WHERE $18::text IS NOT NULL
)"""
SETTLE = f"{SETTLING}\nSELECT count(*) FROM settled\n"

# the sender cancels what its lead may no longer receive
WITHHOLD = f"""
WITH cancelled AS (
  UPDATE messages SET status = {_to("withheld")}, last_error = $2, smtp_message_id = NULL
  WHERE id = $1 AND {_guard("withheld")} RETURNING campaign_id
)
INSERT INTO campaign_kpis AS k (campaign_id, shard, cancelled) SELECT campaign_id, $3, 1 FROM cancelled
{_counter_upsert(KPIS, ["cancelled"])}
"""

# interrupted: the reconciler ends what a dead sender left
INTERRUPT = f"""
UPDATE messages SET status = {_to("interrupted")}, last_error = 'interrupted'
WHERE {_guard("interrupted")} AND claimed_at < $1
RETURNING id, campaign_id
"""
# Per campaign, in id order: its transaction did begin, so it runs; its interrupted messages count as failed.
INTERRUPTED_CAMPAIGN = f"""
WITH running AS ({_campaign("first_send", "$1")})
INSERT INTO campaign_kpis AS k (campaign_id, shard, failed)
SELECT $1, 0, $2 FROM (SELECT count(*) FROM running) AS campaign_locked_first
{_counter_upsert(KPIS, ["failed"])}
"""

# cancel: unsent messages of a campaign (stop) or of a lead (unsubscribe, bounce, reply)
_CANCEL = f"""
WITH cancelled AS (
  UPDATE messages SET status = {_to("cancel")} WHERE {_guard("cancel")} AND {{selected}} RETURNING campaign_id
)
INSERT INTO campaign_kpis AS k (campaign_id, shard, cancelled)
SELECT campaign_id, 0, count(*) FROM cancelled GROUP BY campaign_id ORDER BY campaign_id
{_counter_upsert(KPIS, ["cancelled"])}
"""
CANCEL_OF_CAMPAIGN = _CANCEL.format(selected="campaign_id = $1")
CANCEL_OF_LEAD = _CANCEL.format(selected="lead_id = $1")
CANCEL_FOLLOWUPS_OF_LEAD = _CANCEL.format(selected="lead_id = $1 AND is_followup")

# skip, stop_sequence: a due step of a sequence cancelled, saying why ($2), with its history row
_WITHDRAW = """
WITH withdrawn AS (
  UPDATE messages SET status = {target}, last_error = $2 WHERE id = $1 AND {guard}
  RETURNING id, campaign_id
), {history}
INSERT INTO campaign_kpis AS k (campaign_id, shard, cancelled) SELECT campaign_id, $4, 1 FROM withdrawn
{upsert}
RETURNING campaign_id
"""
WITHDRAW = {
    name: _WITHDRAW.format(
        target=_to(name), guard=_guard(name), history=_history("withdrawn", name, "$3", "$5"),
        upsert=_counter_upsert(KPIS, ["cancelled"]),
    )
    for name in ("skip", "stop_sequence")
}  # fmt: skip

# bounced by a delivery status notification: sent → bounced
DSN_BOUNCE = f"""
WITH bounced AS (
  UPDATE messages SET status = {_to("dsn_bounced")}, last_error = left($2::text, 1000)
  WHERE id = $1 AND {_guard("dsn_bounced")}
  RETURNING id, campaign_id, lead_id, workspace_id
), {_history("bounced", "dsn_bounced", "$3", "$4")},
{_counted("bounced", "bounced", "$5", "$6")}, lead_bounced AS (
  UPDATE leads SET status = '{TRANSITIONS["dsn_bounced"].lead}' FROM bounced WHERE leads.id = bounced.lead_id
  RETURNING leads.workspace_id, leads.email
), suppressed AS (
  INSERT INTO suppressions (id, workspace_id, email, reason)
  SELECT gen_random_uuid(), workspace_id, lower(email), left('hard bounce: ' || $2, 500) FROM lead_bounced
  ON CONFLICT DO NOTHING
), announced AS (
  INSERT INTO outbox (routing_key, payload) SELECT $7, $8::text::jsonb FROM bounced
)
SELECT lead_id FROM bounced
"""

# resend: failed → planned, by hand
RESEND = f"""
WITH resent AS (
  UPDATE messages
  SET status = {_to("resend")}, not_before = $2,
    retry_count = retry_count + {int(TRANSITIONS["resend"].spends_retry)}
  WHERE id = $1 AND {_guard("resend")} RETURNING campaign_id
), reopened AS (
  {_campaign("reopen", "SELECT campaign_id FROM resent")}
)
INSERT INTO campaign_kpis AS k (campaign_id, shard, failed)
SELECT campaign_id, $3, {TRANSITIONS["resend"].counters["failed"]}
FROM resent, (SELECT count(*) FROM reopened) AS campaign_locked_first
{_counter_upsert(KPIS, ["failed"])}
RETURNING campaign_id
"""

# opens: a batch of hits in one statement
# Hits $1–$5 in arrival order; those of a message that is not sent are dropped. A hit is a machine open when
# its client is (decided in Python, $5) or when it came within $6 of the send. The first hit of a message not
# opened before is its first open (counted on the day it fell on, in the window's zone); the first non-machine
# hit of one not opened by a person before is its first human open. $7: the KPI shard. Rows are locked in id
# order: concurrent tracker processes that see the same message serialise on it, so a first open counts once.
RECORD_OPENS = f"""
WITH hits AS (
  SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::bool[])
    WITH ORDINALITY AS h(message_id, at, user_agent, ip, machine_client, arrival)
), locked AS (
  SELECT m.id, m.campaign_id, m.lead_id, c.workspace_id, m.sent_at, m.opened_at, m.human_opened_at,
    c."window"->>'timezone' AS zone
  FROM messages m JOIN campaigns c ON c.id = m.campaign_id
  WHERE m.id = ANY($1::uuid[]) AND m.{_guard("open")}
  ORDER BY m.id
  FOR UPDATE OF m
), scored AS (
  SELECT h.message_id, h.at, h.user_agent, h.ip, h.arrival, l.campaign_id, l.opened_at, l.human_opened_at,
    l.zone, h.machine_client OR coalesce(h.at - l.sent_at < $6::interval, false) AS machine
  FROM hits h JOIN locked l ON l.id = h.message_id
), firsts AS (
  SELECT message_id, campaign_id, zone,
    CASE WHEN bool_and(opened_at IS NULL) THEN (array_agg(at ORDER BY arrival))[1] END AS opened,
    CASE WHEN bool_and(human_opened_at IS NULL)
      THEN (array_agg(at ORDER BY arrival) FILTER (WHERE NOT machine))[1] END AS opened_human
  FROM scored WHERE opened_at IS NULL OR human_opened_at IS NULL
  GROUP BY message_id, campaign_id, zone
), events AS (
  INSERT INTO message_events ({HISTORY_COLUMNS})
  SELECT message_id, campaign_id, '{TRANSITIONS["open"].history}', at, machine,
    jsonb_build_object('user_agent', user_agent, 'ip', ip)
  FROM scored ORDER BY arrival
), first_opens AS (
  UPDATE messages m
  SET opened_at = coalesce(m.opened_at, f.opened),
    human_opened_at = coalesce(m.human_opened_at, f.opened_human)
  FROM firsts f
  WHERE m.id = f.message_id AND (f.opened IS NOT NULL OR f.opened_human IS NOT NULL)
), campaigns AS (
  INSERT INTO campaign_kpis AS k (campaign_id, shard, opens_total, opened, opened_human)
  SELECT campaign_id, $7, t.hits, count(f.opened), count(f.opened_human)
  FROM (SELECT campaign_id, count(*) AS hits FROM scored GROUP BY campaign_id) AS t
  LEFT JOIN firsts AS f USING (campaign_id)
  GROUP BY campaign_id, t.hits
  ORDER BY campaign_id
  {_counter_upsert(KPIS, ["opens_total", "opened", "opened_human"])}
), days AS (
  INSERT INTO campaign_kpi_days AS k (campaign_id, day, shard, opened)
  SELECT campaign_id, (opened AT TIME ZONE zone)::date, $7, count(*)
  FROM firsts WHERE opened IS NOT NULL
  GROUP BY 1, 2 ORDER BY 1, 2
  {_counter_upsert(DAYS, ["opened"])}
), announced AS (
  INSERT INTO outbox (routing_key, payload)
  SELECT '{MessageOpened.routing_key}', jsonb_build_object(
    'event_id', gen_random_uuid(), 'occurred_at', f.opened, 'workspace_id', l.workspace_id,
    'message_id', f.message_id, 'campaign_id', f.campaign_id, 'lead_id', l.lead_id,
    'is_machine', f.opened_human IS DISTINCT FROM f.opened)
  FROM firsts AS f JOIN locked AS l ON l.id = f.message_id
  WHERE f.opened IS NOT NULL
  ORDER BY f.opened
)
SELECT count(*) FROM locked
"""

# history only: a soft bounce, an automatic reply
HISTORY = f"""
INSERT INTO message_events ({HISTORY_COLUMNS})
SELECT id, campaign_id, $2, $3, false, $4::text::jsonb FROM messages WHERE id = $1
RETURNING message_id
"""


def _first_of(name: str, column: str) -> str:
    """Transition `name` of message $1 at $2 (history data $3, KPI shard $4): its history row always; on the
    message's first one, `column` set and its counter and day counter (on the local day of the campaign
    window) raised. The message row is locked first, so concurrent first ones count once. Its CTEs end in
    `firsts`, to be followed by more or by a final SELECT."""
    declared = TRANSITIONS[name]
    [counter] = declared.counters
    assert declared.day == counter, name
    return f"""
WITH message AS (
  SELECT m.id, m.campaign_id, m.{column} IS NULL AS first, c."window"->>'timezone' AS zone
  FROM messages AS m JOIN campaigns AS c ON c.id = m.campaign_id
  WHERE m.id = $1 AND m.{_guard(name)}
  FOR UPDATE OF m
), {_history("message", name, "$2", "$3")}, firsts AS (
  UPDATE messages SET {column} = $2 FROM message WHERE messages.id = message.id AND message.first
  RETURNING message.campaign_id, message.zone
), {_counted("firsts", counter, "$4", "($2 AT TIME ZONE zone)::date")}"""


# The message's ids when it exists, `first` on its first click.
CLICK = f"""{_first_of("click", "clicked_at")}
SELECT m.campaign_id, m.lead_id, c.workspace_id, EXISTS (SELECT FROM firsts) AS first
FROM message JOIN messages AS m ON m.id = message.id JOIN campaigns AS c ON c.id = m.campaign_id
"""


# the lead's own transitions


def _lead_leaves(name: str, reason: str) -> str:
    """CTEs `lead` (lead $2 to transition `name`'s lead status, from the ones it changes) and `suppressed`
    (its address, with `reason`)."""
    declared = TRANSITIONS[name]
    assert declared.suppress, name
    return f"""
WITH lead AS (
  UPDATE leads SET status = '{declared.lead}'
  WHERE id = $2 AND status IN {_in(declared.lead_sources)}
  RETURNING id, workspace_id, email
), suppressed AS (
  INSERT INTO suppressions (id, workspace_id, email, reason)
  SELECT gen_random_uuid(), workspace_id, lower(email), '{reason}' FROM lead
  ON CONFLICT DO NOTHING
)"""


UNSUBSCRIBE = f"""{_lead_leaves("unsubscribed", "unsubscribed")}, counted AS (
  INSERT INTO campaign_kpis AS k (campaign_id, shard, unsubscribed) SELECT $1, $3, 1 FROM lead
  {_counter_upsert(KPIS, ["unsubscribed"])}
), announced AS (
  INSERT INTO outbox (routing_key, payload) SELECT $4, $5::text::jsonb FROM lead
)
SELECT workspace_id FROM lead
"""
_replied = TRANSITIONS["replied"]
# $5: the lead, $6–$7: the event.
REPLY = f"""{_first_of("replied", "replied_at")}, replied AS (
  UPDATE leads SET status = '{_replied.lead}' WHERE id = $5 AND status IN {_in(_replied.lead_sources)}
  RETURNING id
), announced AS (
  INSERT INTO outbox (routing_key, payload) SELECT $6, $7::text::jsonb FROM replied
)
SELECT id FROM replied
"""
# Counted once per lead, on the campaign of the message it complained about ($1), like an unsubscribe.
COMPLAIN = f"""{_lead_leaves("complained", "complaint")}, message AS (
  SELECT m.id, m.campaign_id, c."window"->>'timezone' AS zone
  FROM lead, messages AS m JOIN campaigns AS c ON c.id = m.campaign_id
  WHERE m.id = $1 AND m.{_guard("complained")}
), {_history("message", "complained", "$3", "$4")},
{_counted("message", "complained", "$5", "($3 AT TIME ZONE zone)::date")}, announced AS (
  INSERT INTO outbox (routing_key, payload) SELECT $6, $7::text::jsonb FROM lead
)
SELECT workspace_id FROM lead
"""

ANNOUNCE = (
    "INSERT INTO outbox (routing_key, payload, trace_context) VALUES ($1, $2::text::jsonb, $3::text::jsonb)"
)

# complete: the campaign transition when nothing is left to send
# Nothing unfinished, and no sent (or skipped) message still owed its next step (its `MessageSent` is on its
# way, or an edit added the step) by a lead that may still get one; a campaign without steps owes none
# (checked first: no scan of its mail).
COMPLETE = f"""
UPDATE campaigns AS c SET status = '{RULES["complete"][1]}'
WHERE c.id = $1 AND c.status IN {_in(RULES["complete"][0])}
  AND NOT EXISTS (SELECT FROM messages AS m WHERE m.campaign_id = c.id AND m.status IN {_in(UNFINISHED)})
  AND NOT (EXISTS (SELECT FROM campaign_steps AS s WHERE s.campaign_id = c.id) AND EXISTS (
    SELECT FROM messages AS m JOIN leads AS l ON l.id = m.lead_id
      JOIN campaign_steps AS s ON s.campaign_id = m.campaign_id AND s.position = m.step + 1
    WHERE m.campaign_id = c.id AND l.status = '{LeadStatus.ACTIVE}'
      AND (m.status = '{MessageStatus.SENT}'
        OR m.status = '{MessageStatus.CANCELLED}' AND m.last_error LIKE '{SKIPPED}%')
      AND NOT EXISTS (SELECT FROM messages AS f WHERE f.parent_message_id = m.id)
  ))
RETURNING id, workspace_id
"""


# the transitions, called by the services
async def plan(
    db: CopyDb, campaign_id: uuid.UUID, rows: Sequence[tuple[Any, ...]], per_day: Mapping[date, int]
) -> None:
    """New messages (COPY_COLUMNS records): `planned` ones counted in total and on their slot days
    (`per_day`), `failed` ones (no slot within the horizon) in total and as failed."""
    if not rows:
        return
    days = [day for day, n in per_day.items() if n]
    status = COPY_COLUMNS.index("status")
    failed = sum(row[status] == MessageStatus.FAILED for row in rows)
    await db.fetch(PLANNED, campaign_id, days, [per_day[day] for day in days], len(rows), failed)
    await db.copy_records_to_table("messages", records=rows, columns=COPY_COLUMNS)


async def open_counters(db: Db, campaign_id: uuid.UUID) -> None:
    await db.fetch(OPEN_COUNTERS, campaign_id)


async def dispatch(db: Db, commands: Sequence[SendMessage]) -> None:
    """planned → dispatched, each with its `SendMessage` in the outbox."""
    if commands:
        await db.fetch(
            DISPATCH,
            [command.message_id for command in commands],
            [command.model_dump_json() for command in commands],
            SendMessage.routing_key,
        )


async def release(db: Db, message_id: uuid.UUID) -> None:
    """Past its deadline: the dispatcher gives it a new slot instead of sending it late."""
    await db.fetch(RELEASE_ONE, message_id)


async def release_campaign(db: Db, campaign_id: uuid.UUID) -> None:
    """Commands on their way for a paused campaign are void: take them back."""
    await db.fetch(RELEASE_CAMPAIGN, campaign_id)


async def release_lost(db: Db, before: datetime) -> int:
    """Dispatched messages nobody claimed by `before` (the broker lost their command)."""
    return len(await db.fetch(RELEASE_LOST, before))


async def release_domain(db: Db, domain_id: uuid.UUID) -> None:
    """Commands on their way for a paused sending domain are void: take them back."""
    await db.fetch(RELEASE_OF_DOMAIN, domain_id)


async def release_refused(db: Db, message_id: uuid.UUID) -> bool:
    """A command the sender could not claim: back to planned if its sending domain is paused (and it is not
    the domain's probe). False: the claim failed for another reason (a duplicate, a paused campaign)."""
    return bool(await db.fetch(RELEASE_REFUSED, message_id))


async def defer(db: Db, message_id: uuid.UUID, not_before: datetime) -> None:
    await db.fetch(DEFER, message_id, not_before)


async def give_back(db: Db, message_id: uuid.UUID, claimed_at: datetime, now: datetime) -> bool:
    """A claim whose e-mail was never begun, planned again if it is still the one made at `claimed_at`
    (the `defer` transition: no try spent). False: it was not (its commit was lost after all, or another
    sender claimed it since)."""
    return bool(await db.fetch(GIVE_BACK, message_id, now, claimed_at))


async def vacate(db: Db, message_ids: Sequence[uuid.UUID]) -> None:
    """Unsent messages give up their slots for a re-plan in the same transaction (each then gets a new one,
    or fails without one)."""
    await db.fetch(VACATE, list(message_ids))


async def reslot(
    db: Db,
    message_id: uuid.UUID,
    start: datetime,
    end: datetime,
    old_day: date,
    new_day: date,
    domain: tuple[uuid.UUID, str],
) -> None:
    """A new slot [start, end) on `domain` (id, name); the days are the old and new slots' local dates."""
    await db.fetch(RESLOT, message_id, start, end, old_day, new_day, *domain)


async def fail_without_slot(db: Db, message_id: uuid.UUID, reason: str) -> bool:
    """An unsent message no slot within the planner's horizon can take. False: it was not unsent."""
    return bool(await db.fetch(NO_SLOT, message_id, reason, shard_of(message_id)))


async def claim(db: Db, message_id: uuid.UUID, campaign_id: uuid.UUID, now: datetime) -> Any:
    """The claimed message's row with all its e-mail needs, or None (a duplicate, or the campaign does not
    send)."""
    rows = await db.fetch(CLAIM, message_id, campaign_id, now)
    return rows[0] if rows else None


async def peek(db: Db, message_id: uuid.UUID, campaign_id: uuid.UUID) -> Any:
    """The row `claim` would return now, without claiming (None: there would be nothing to claim)."""
    rows = await db.fetch(PEEK, message_id, campaign_id)
    return rows[0] if rows else None


async def settle(db: Db, args: tuple[Any, ...]) -> bool:
    """sending → the transition `args` name (made by `settle_args`). A message settled before is left
    (False)."""
    settled = await db.fetch(SETTLE, *args)
    return bool(settled[0]["count"])


def settle_args(
    message_id: uuid.UUID,
    name: str,
    now: datetime,
    day: date,
    error: str | None,
    data: dict[str, Any],
    event: Event | None,
    not_before: datetime | None = None,
) -> tuple[Any, ...]:
    """The parameters of `SETTLING`: sending → `name` (one of SETTLES; one planned again, `retry`, `rejected`
    or `deferred`, with its `not_before`). `event` goes to the outbox with it (`rejected` and `deferred`
    announce nothing)."""
    declared = TRANSITIONS[name]
    assert name in SETTLES, name
    assert declared.target is not None
    assert (declared.target == MessageStatus.PLANNED) == (not_before is not None)
    assert (event is None) == (declared.announce is None), name
    count = declared.counters.get
    per_day = [int(declared.day == column) for column in ("sent", "bounced")]
    args = (
        message_id, declared.target, error, not_before, declared.history, now, json.dumps(data),
        shard_of(message_id), count("sent", 0), count("bounced", 0), count("bounced_at_smtp", 0),
        count("failed", 0), day, *per_day, declared.lead, declared.suppress,
        event.routing_key if event else None, event.model_dump_json() if event else None,
        declared.spends_retry,
    )  # fmt: skip
    assert len(args) == SETTLE_ARGS
    return args


async def withhold(db: Db, message_id: uuid.UUID, reason: str) -> None:
    await db.fetch(WITHHOLD, message_id, reason, shard_of(message_id))


async def interrupt(db: Db, claimed_before: datetime) -> dict[uuid.UUID, int]:
    """Messages `sending` since before `claimed_before` are failed / interrupted: how many per campaign."""
    per_campaign = Counter(row["campaign_id"] for row in await db.fetch(INTERRUPT, claimed_before))
    for campaign_id in sorted(per_campaign):
        await db.fetch(INTERRUPTED_CAMPAIGN, campaign_id, per_campaign[campaign_id])
    return dict(per_campaign)


async def cancel_campaign(db: Db, campaign_id: uuid.UUID) -> None:
    await db.fetch(CANCEL_OF_CAMPAIGN, campaign_id)


async def cancel_lead(db: Db, lead_id: uuid.UUID, only_followups: bool = False) -> None:
    await db.fetch(CANCEL_FOLLOWUPS_OF_LEAD if only_followups else CANCEL_OF_LEAD, lead_id)


async def withdraw(db: Db, message_id: uuid.UUID, name: str, reason: str, now: datetime) -> bool:
    """A due step of a sequence cancelled: `skip` (its condition does not hold) or `stop_sequence` (a stop
    rule took hold), `reason` in its `last_error` and its history. False: it was not unsent."""
    assert name in WITHDRAW, name
    data = json.dumps({"reason": reason})
    return bool(await db.fetch(WITHDRAW[name], message_id, reason, now, shard_of(message_id), data))


async def dsn_bounce(
    db: Db,
    message_id: uuid.UUID,
    now: datetime,
    day: date,
    reason: str,
    data: dict[str, Any],
    event: MessageBounced,
) -> bool:
    """sent → bounced, counted once (a repeated DSN changes nothing); the lead never gets mail again."""
    rows = await db.fetch(
        DSN_BOUNCE, message_id, reason, now, json.dumps(data), shard_of(message_id), day, event.routing_key,
        event.model_dump_json(),
    )  # fmt: skip
    if not rows:
        return False
    await cancel_lead(db, rows[0]["lead_id"])
    return True


async def resend(db: Db, message_id: uuid.UUID, now: datetime) -> bool:
    return bool(await db.fetch(RESEND, message_id, now, shard_of(message_id)))


async def record_opens(
    db: Db,
    message_ids: Sequence[uuid.UUID],
    ats: Sequence[datetime],
    user_agents: Sequence[str],
    ips: Sequence[str | None],
    machine_clients: Sequence[bool],
    too_soon: timedelta,
) -> None:
    await db.fetch(
        RECORD_OPENS, message_ids, ats, user_agents, ips, machine_clients, too_soon,
        shard_of(message_ids[0]),  # spreads concurrent tracker processes over the counter rows
    )  # fmt: skip


async def record(db: Db, message_id: uuid.UUID, name: str, now: datetime, data: dict[str, Any]) -> bool:
    """A transition that only writes history (a soft bounce, an automatic reply). False: no such message."""
    declared = TRANSITIONS[name]
    assert declared.target is None, name
    assert declared.lead is None, name
    assert not declared.counters, name
    return bool(await db.fetch(HISTORY, message_id, declared.history, now, json.dumps(data)))


async def click(db: Db, message_id: uuid.UUID, now: datetime, data: dict[str, Any]) -> bool:
    """A click: recorded; the message's first one counted and announced (`MessageClicked`). False: no such
    message."""
    rows = await db.fetch(CLICK, message_id, now, json.dumps(data), shard_of(message_id))
    if rows and rows[0]["first"]:
        [row] = rows
        clicked = MessageClicked(
            workspace_id=row["workspace_id"], message_id=message_id, campaign_id=row["campaign_id"],
            lead_id=row["lead_id"], occurred_at=now, url=data.get("url"),
        )  # fmt: skip
        await announce(db, clicked)
    return bool(rows)


async def announce(db: Db, event: Event) -> None:
    """`event` into the outbox, in the transaction of `db` (and the trace of the caller, if any)."""
    trace_context = tracing.carrier()
    await db.fetch(
        ANNOUNCE, event.routing_key, event.model_dump_json(), trace_context and json.dumps(trace_context)
    )


async def unsubscribe(db: Db, campaign_id: uuid.UUID, event: LeadUnsubscribed) -> bool:
    """The lead unsubscribed (counted on `campaign_id`), its address suppressed, its unsent mail cancelled.
    False when it had unsubscribed before."""
    rows = await db.fetch(
        UNSUBSCRIBE, campaign_id, event.lead_id, shard_of(event.lead_id), event.routing_key,
        event.model_dump_json(),
    )  # fmt: skip
    if rows:
        await cancel_lead(db, event.lead_id)
    return bool(rows)


async def reply(db: Db, now: datetime, data: dict[str, Any], event: LeadReplied) -> bool:
    """A person answered `event.message_id`: recorded, the message's first reply counted; an active lead
    becomes replied and its follow-ups are cancelled. True when the lead became replied."""
    replied = await db.fetch(
        REPLY, event.message_id, now, json.dumps(data), shard_of(event.message_id), event.lead_id,
        event.routing_key, event.model_dump_json(),
    )  # fmt: skip
    await cancel_lead(db, event.lead_id, only_followups=True)
    return bool(replied)


async def complain(db: Db, now: datetime, data: dict[str, Any], event: LeadComplained) -> bool:
    """The lead complained about `event.message_id`: complained, suppressed, its unsent mail cancelled;
    counted once per lead. False when it had complained before (or the message is unknown)."""
    assert event.message_id is not None
    rows = await db.fetch(
        COMPLAIN, event.message_id, event.lead_id, now, json.dumps(data), shard_of(event.lead_id),
        event.routing_key, event.model_dump_json(),
    )  # fmt: skip
    if rows:
        await cancel_lead(db, event.lead_id)
    return bool(rows)


async def complete_if_done(db: Db, campaign_id: uuid.UUID, now: datetime) -> bool:
    """The campaign completed (announced with `CampaignCompleted`) if nothing is left to send."""
    rows = await db.fetch(COMPLETE, campaign_id)
    if rows:
        completed = CampaignCompleted(
            workspace_id=rows[0]["workspace_id"], campaign_id=campaign_id, occurred_at=now
        )
        await announce(db, completed)
    return bool(rows)
