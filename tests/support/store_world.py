"""A small world of rows for driving `shared.db.message_store` directly: one workspace, domain, template and
lead; a campaign with the messages under test; a second campaign with a planned follow-up to the same lead
(the lead's other mail, which a bounce, an unsubscribe or a reply cancels). Everything is written through a
`Db`, so the same world serves an asyncpg connection and a SQLAlchemy session."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.tracker.machine import TOO_SOON
from shared import events, sequences
from shared.db import message_store as store
from shared.db.message_store import Db
from shared.message_states import TRANSITIONS, MessageStatus

NOW = datetime(2000, 1, 3, 10, tzinfo=UTC)  # long before any other test's rows: `interrupt` sees only ours
ZONE = "Europe/Amsterdam"
TODAY = date(2000, 1, 3)  # NOW's local date
WINDOW = {"timezone": ZONE, "days": [0, 1, 2, 3, 4, 5, 6], "start": "00:00", "end": "24:00", "holidays": None}
INTERVAL = timedelta(seconds=60)
COUNTERS = ("planned", "cancelled", "sent", "opened", "opened_human", "opens_total", "bounced",
            "bounced_at_smtp", "failed", "unsubscribed", "replied", "clicked", "complained")  # fmt: skip
DAY_COUNTERS = ("planned", "sent", "opened", "bounced", "replied", "clicked", "complained")
SUMS = ", ".join(f"coalesce(sum({c}), 0)::int AS {c}" for c in COUNTERS)
SUM_COUNTERS = f"SELECT {SUMS} FROM campaign_kpis WHERE campaign_id = ANY($1)"  # noqa: S608
DAY_SUMS = ", ".join(f"sum({c})::int AS {c}" for c in DAY_COUNTERS)
SUM_DAYS = f"SELECT day, {DAY_SUMS} FROM campaign_kpi_days WHERE campaign_id = ANY($1) GROUP BY day"  # noqa: S608


@dataclass
class World:
    workspace: uuid.UUID
    domain: uuid.UUID
    campaign: uuid.UUID
    other_campaign: uuid.UUID
    lead: uuid.UUID
    email: str
    messages: list[uuid.UUID]  # in `campaign`
    sibling: uuid.UUID  # the lead's planned follow-up in `other_campaign`


async def build(db: Db, campaign_status: str = "running", messages: int = 1, leads: int = 1) -> World:
    """`messages` planned messages in the campaign, to `leads` leads in turn, by the store's own `plan`."""
    workspace, template, domain = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    campaign, other = uuid.uuid4(), uuid.uuid4()
    lead_ids = [uuid.uuid4() for _ in range(leads)]
    await db.fetch("INSERT INTO workspaces (id, name) VALUES ($1, $2)", workspace, f"store-{workspace.hex}")
    await db.fetch(
        "INSERT INTO templates (id, workspace_id, name, subject, body_html) VALUES ($1, $2, 't', 's', '')",
        template, workspace,
    )  # fmt: skip
    await db.fetch(
        "INSERT INTO sending_domains (id, workspace_id, domain, from_email, from_name, smtp_host,"
        " smtp_port, smtp_security, min_interval_seconds, active)"
        " VALUES ($1, $2, $3, $4, '', '127.0.0.1', 25, 'none', 60, true)",
        domain, workspace, f"{domain.hex}.example", f"a@{domain.hex}.example",
    )  # fmt: skip
    for lead in lead_ids:
        await db.fetch(
            "INSERT INTO leads (id, workspace_id, email, first_name, last_name, company, tags, fields,"
            " status) VALUES ($1, $2, $3, '', '', '', '{}', '{}', 'active')",
            lead, workspace, f"{lead.hex}@lead.example",
        )  # fmt: skip
    for id_, status in ((campaign, campaign_status), (other, "running")):
        await db.fetch(
            'INSERT INTO campaigns (id, workspace_id, name, status, template_id, track_opens, track_clicks,'
            ' "window",'
            " domains, audience_count, audience_excluded)"
            " VALUES ($1, $2, 'c', $3, $4, true, false, $5::text::jsonb, $6, 0, '{}')",
            id_, workspace, status, template, json.dumps(WINDOW), [f"{domain.hex}.example"],
        )  # fmt: skip
        await store.open_counters(db, id_)
    rows = [
        message_row(workspace, campaign, lead_ids[i % leads], domain, NOW - timedelta(hours=2) + i * INTERVAL)
        for i in range(messages)
    ]
    await store.plan(db, campaign, rows, {TODAY: messages})
    sibling = message_row(workspace, other, lead_ids[0], domain, NOW + timedelta(days=1), followup=True)
    await store.plan(db, other, [sibling], {TODAY + timedelta(days=1): 1})
    return World(
        workspace, domain, campaign, other, lead_ids[0], f"{lead_ids[0].hex}@lead.example",
        [row[0] for row in rows], sibling[0],
    )  # fmt: skip


def message_row(
    workspace: uuid.UUID,
    campaign: uuid.UUID,
    lead: uuid.UUID,
    domain: uuid.UUID,
    start: datetime,
    followup: bool = False,
    status: MessageStatus = MessageStatus.PLANNED,
) -> tuple[Any, ...]:
    """A new message as `message_store.plan` takes it."""
    values = {
        "id": uuid.uuid4(), "workspace_id": workspace, "campaign_id": campaign, "lead_id": lead,
        "sending_domain_id": domain, "domain_used": f"{domain.hex}.example", "scheduled_at": start,
        "slot_ends_at": start + INTERVAL, "not_before": start, "status": status.value,
        "step": int(followup), "parent_message_id": None, "retry_count": 0, "last_error": None,
    }  # fmt: skip
    return tuple(values[column] for column in store.COPY_COLUMNS)


async def put(db: Db, message: uuid.UUID, status: MessageStatus) -> None:
    """Set a message's status as a test's starting point (claimed and sent an hour before NOW)."""
    await db.fetch(
        "UPDATE messages SET status = $2, claimed_at = $3, sent_at = $3, smtp_message_id = $4 WHERE id = $1",
        message, status.value, NOW - timedelta(hours=1), f"<{message}@test>",
    )  # fmt: skip


def command(world: World, message: uuid.UUID, now: datetime) -> events.SendMessage:
    """The command the dispatcher would issue for `message` at `now`."""
    return events.SendMessage(
        workspace_id=world.workspace, message_id=message, campaign_id=world.campaign, scheduled_at=now,
        deadline=now + INTERVAL,
    )  # fmt: skip


async def run(db: Db, world: World, name: str, message: uuid.UUID, now: datetime = NOW) -> None:
    """Transition `name` of `message`, the way the services call it."""
    ids = {"workspace_id": world.workspace, "message_id": message, "campaign_id": world.campaign}
    lead = await db.fetch("SELECT lead_id FROM messages WHERE id = $1", message)
    lead_id = lead[0]["lead_id"]
    if name == "dispatch":
        await store.dispatch(db, [command(world, message, now)])
    elif name == "claim":
        await store.claim(db, message, world.campaign, now)
    elif name == "release":
        await store.release(db, message)
    elif name == "defer":
        await store.defer(db, message, now + timedelta(hours=1))
    elif name == "no_slot":
        await store.fail_without_slot(db, message, "no free slot within the horizon")
    elif name == "reslot":
        start = (await db.fetch("SELECT scheduled_at FROM messages WHERE id = $1", message))[0][
            "scheduled_at"
        ]
        new = now + timedelta(days=2) + (start - NOW)
        domain = (world.domain, f"{world.domain.hex}.example")
        await store.reslot(db, message, new, new + INTERVAL, _local(start), _local(new), domain)
    elif name in store.SETTLES:
        outcomes: dict[str, events.Event | None] = {
            "sent": events.MessageSent(**ids, sent_at=now, smtp_message_id=f"<{message}@test>"),
            "bounced": events.MessageBounced(**ids, reason="550 5.1.1"),
            "failed": events.MessageFailed(**ids, reason="451 4.3.0"),
            "retry": events.MessageFailed(**ids, reason="451 4.3.0", retry_at=now + timedelta(minutes=5)),
            "rejected": None,  # a policy rejection: the domain's problem, nothing announced
            "deferred": None,  # announces nothing: the sender slows its pace towards the provider
        }
        again = now + timedelta(minutes=5) if TRANSITIONS[name].target == MessageStatus.PLANNED else None
        await store.settle(
            db, store.settle_args(message, name, now, _local(now), "reason", {}, outcomes[name], again)
        )
    elif name == "withheld":
        await store.withhold(db, message, "lead is unsubscribed or suppressed")
    elif name == "interrupted":
        await store.interrupt(db, now)
    elif name == "cancel":
        await store.cancel_campaign(db, world.campaign)
    elif name in store.WITHDRAW:
        reason = (sequences.SKIPPED if name == "skip" else sequences.STOPPED) + "as a test"
        await store.withdraw(db, message, name, reason, now)
    elif name == "dsn_bounced":
        event = events.MessageBounced(**ids, lead_id=lead_id, reason="5.1.1 gone")
        await store.dsn_bounce(db, message, now, _local(now), "5.1.1 gone", {"dsn": True}, event)
    elif name == "resend":
        await store.resend(db, message, now)
    elif name == "open":
        await store.record_opens(db, [message], [now], ["Mozilla/5.0"], [None], [False], TOO_SOON)
    elif name in ("soft_bounced", "auto_replied", "delivered"):
        await store.record(db, message, name, now, {})
    elif name == "click":
        await store.click(db, message, now, {})
    elif name == "replied":
        await store.reply(
            db, now, {}, events.LeadReplied(workspace_id=world.workspace, lead_id=lead_id, message_id=message)
        )
    elif name == "complained":
        event = events.LeadComplained(workspace_id=world.workspace, lead_id=lead_id, message_id=message)
        await store.complain(db, now, {}, event)
    elif name == "unsubscribed":
        event = events.LeadUnsubscribed(workspace_id=world.workspace, lead_id=lead_id, message_id=message)
        await store.unsubscribe(db, world.campaign, event)
    else:
        raise AssertionError(f"no way to run {name}")


def _local(moment: datetime) -> date:
    return moment.astimezone(ZoneInfo(ZONE)).date()


# Every transition of a message that exists (`plan` and `plan_without_slot` make new rows).
RUNNABLE = [name for name, declared in TRANSITIONS.items() if declared.sources]


async def snapshot(db: Db, world: World, campaigns: list[uuid.UUID] | None = None) -> dict[str, Any]:
    """Everything a transition may change in the world (counters added up over `campaigns`, else both)."""
    campaigns = campaigns or [world.campaign, world.other_campaign]
    messages = await db.fetch(
        "SELECT id, status, retry_count, not_before, scheduled_at, slot_ends_at, last_error, claimed_at,"
        " sent_at, opened_at, human_opened_at, replied_at, clicked_at, smtp_message_id FROM messages"
        " WHERE campaign_id = ANY($1) ORDER BY id",
        campaigns,
    )
    counters = await db.fetch(SUM_COUNTERS, campaigns)
    days = await db.fetch(SUM_DAYS, campaigns)
    return {
        "messages": {row["id"]: dict(row) for row in messages},
        "counters": dict(counters[0]),
        "days": {(row["day"], c): row[c] for row in days for c in DAY_COUNTERS if row[c]},
        "history": [
            (row["message_id"], row["kind"])
            for row in await db.fetch(
                "SELECT message_id, kind FROM message_events WHERE campaign_id = ANY($1) ORDER BY id",
                campaigns,
            )
        ],
        "outbox": [
            row["routing_key"]
            for row in await db.fetch(
                "SELECT routing_key FROM outbox WHERE payload->>'workspace_id' = $1::text ORDER BY id",
                str(world.workspace),
            )
        ],
        "campaigns": {
            row["id"]: row["status"]
            for row in await db.fetch("SELECT id, status FROM campaigns WHERE id = ANY($1)", campaigns)
        },
        "leads": {
            row["id"]: row["status"]
            for row in await db.fetch("SELECT id, status FROM leads WHERE workspace_id = $1", world.workspace)
        },
        "suppressed": [
            row["email"]
            for row in await db.fetch(
                "SELECT email FROM suppressions WHERE workspace_id = $1", world.workspace
            )
        ],
    }
