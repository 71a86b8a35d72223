"""All SQL of the tracker: finding the message a link or an inbound mail names. What it records is a message
or lead transition of `shared.db.message_store`."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import date, datetime
from typing import Any

import structlog
from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.tracker.inbound import first_named
from shared.clock import Clock
from shared.db import domain_health, message_store
from shared.db.message_store import on_session
from shared.db.models import Campaign, EspEventRow, EspWebhook, Lead, Message
from shared.events import LeadComplained, LeadReplied, LeadUnsubscribed, MessageBounced
from shared.message_states import MessageStatus
from shared.reputation import Signal

log = structlog.get_logger()


async def unsubscribe(session: AsyncSession, message_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID] | None:
    """Lead unsubscribed, address suppressed, pending messages cancelled, `LeadUnsubscribed` announced;
    counted once, on the first call.

    Returns (workspace, lead) when this call unsubscribed the lead, None when the message is unknown or the
    lead had already unsubscribed."""
    found = (
        await session.execute(
            select(Message.workspace_id, Message.campaign_id, Message.lead_id).where(Message.id == message_id)
        )
    ).first()
    if found is None:
        return None
    workspace_id, campaign_id, lead_id = found
    event = LeadUnsubscribed(workspace_id=workspace_id, lead_id=lead_id, message_id=message_id)
    if not await message_store.unsubscribe(on_session(session), campaign_id, event):
        return None
    return workspace_id, lead_id


async def record_click(
    session: AsyncSession, message_id: uuid.UUID, now: datetime, data: dict[str, Any]
) -> bool:
    return await message_store.click(on_session(session), message_id, now, data)


async def record_event(
    session: AsyncSession, message: Any, kind: str, now: datetime, data: dict[str, Any]
) -> None:
    """Returning mail or an ESP event that changes nothing but the message's history (`kind`: soft_bounced,
    auto_replied, delivered)."""
    await message_store.record(on_session(session), message.id, kind, now, data)


def _message_row() -> Any:
    """A message with what recording inbound mail about it takes."""
    return (
        select(
            Message.id,
            Message.workspace_id,
            Message.campaign_id,
            Message.lead_id,
            Message.sending_domain_id,
            Message.status,
            Message.smtp_message_id,
            Campaign.window,
            Lead.email,
        )
        .join(Campaign, Campaign.id == Message.campaign_id)
        .join(Lead, Lead.id == Message.lead_id)
    )


async def message_named(session: AsyncSession, message_id: uuid.UUID | None, smtp_ids: Sequence[str]) -> Any:
    """The message an inbound mail names: by its id (VERP) or by the Message-ID it was sent with."""
    named = []
    if message_id is not None:
        named.append(Message.id == message_id)
    if smtp_ids:
        named.append(Message.smtp_message_id.in_(smtp_ids))
    if not named:
        return None
    return (
        await session.execute(
            _message_row()
            .where(or_(*named))
            .order_by(Message.id != message_id)  # the VERP match wins over a quoted Message-ID
            .limit(1)
        )
    ).first()


async def message_in_order(
    session: AsyncSession, names: Sequence[uuid.UUID | str], workspace_id: uuid.UUID | None = None
) -> Any:
    """Of the messages `names` name (our message ids and Message-IDs), the one named first; only the
    workspace's when it is given (a mailbox's mail names only its tenant's messages)."""
    return first_named(list(names), await messages_named(session, names, workspace_id))


async def messages_named(
    session: AsyncSession, names: Collection[uuid.UUID | str], workspace_id: uuid.UUID | None = None
) -> dict[uuid.UUID | str, Any]:
    """The messages any of `names` name, keyed by message id and by Message-ID; only the workspace's when it
    is given. (The mailbox reader asks once for a run of mails.)"""
    ids = [name for name in names if isinstance(name, uuid.UUID)]
    smtp_ids = [name for name in names if isinstance(name, str)]
    if not names:
        return {}
    query = _message_row().where(or_(Message.id.in_(ids), Message.smtp_message_id.in_(smtp_ids)))
    if workspace_id is not None:
        query = query.where(Message.workspace_id == workspace_id)
    rows = (await session.execute(query)).all()
    found: dict[uuid.UUID | str, Any] = {row.id: row for row in rows}
    found.update({row.smtp_message_id: row for row in rows if row.smtp_message_id})
    return found


async def written_to(
    session: AsyncSession, workspace_id: uuid.UUID, sending_domain_id: uuid.UUID, addresses: Collection[str]
) -> set[str]:
    """Of `addresses` (lower-cased), those of leads the sending domain has sent mail to: the only senders
    whose mail `last_message_to` can match. (The mailbox reader asks once for a run of mails.)"""
    if not addresses:
        return set()
    rows = await session.execute(
        select(func.lower(Lead.email))
        .join(Message, Message.lead_id == Lead.id)
        .where(
            Lead.workspace_id == workspace_id,
            func.lower(Lead.email).in_(list(addresses)),
            Message.sending_domain_id == sending_domain_id,
            Message.status == MessageStatus.SENT,
        )
        .distinct()
    )
    return set(rows.scalars())


async def last_message_to(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    sending_domain_id: uuid.UUID,
    address: str,
    before: datetime,
) -> Any:
    """Our last mail from the sending domain to the lead with this address, sent before `before`: what a mail
    from that address to the sending mailbox answers, when it names nothing."""
    return (
        await session.execute(
            _message_row()
            .where(
                Lead.workspace_id == workspace_id,
                func.lower(Lead.email) == address.lower(),
                Message.sending_domain_id == sending_domain_id,
                Message.status == MessageStatus.SENT,
                Message.sent_at <= before,
            )
            .order_by(Message.sent_at.desc())
            .limit(1)
        )
    ).first()


async def record_hard_bounce(
    session: AsyncSession,
    message: Any,
    now: datetime,
    day: date,
    reason: str,
    data: dict[str, Any],
    enhanced_code: str | None,
) -> bool:
    """sent → bounced, counted once (a repeated DSN changes nothing), `MessageBounced` announced; the lead
    never gets mail again."""
    event = MessageBounced(
        workspace_id=message.workspace_id,
        message_id=message.id,
        campaign_id=message.campaign_id,
        lead_id=message.lead_id,
        reason=reason,
        enhanced_code=enhanced_code,
    )
    return await message_store.dsn_bounce(on_session(session), message.id, now, day, reason, data, event)


async def record_reply(
    session: AsyncSession, message: Any, now: datetime, data: dict[str, Any], source: str = "inbound"
) -> bool:
    """The lead replied: no more follow-ups for it, `LeadReplied` announced. True the first time."""
    event = LeadReplied(
        workspace_id=message.workspace_id, lead_id=message.lead_id, message_id=message.id, source=source
    )
    return await message_store.reply(on_session(session), now, data, event)


async def record_complaint(session: AsyncSession, message: Any, now: datetime, data: dict[str, Any]) -> bool:
    """The lead complained: suppressed, its pending mail cancelled, `LeadComplained` announced. True the
    first time."""
    event = LeadComplained(workspace_id=message.workspace_id, lead_id=message.lead_id, message_id=message.id)
    return await message_store.complain(on_session(session), now, data, event)


async def esp_webhook(session: AsyncSession, provider: str, token: str) -> Any:
    """The active ESP webhook that the tracker URL with this provider and token names, or None."""
    return (
        await session.execute(
            select(
                EspWebhook.workspace_id,
                EspWebhook.provider,
                EspWebhook.topic_arns,
                EspWebhook.username,
                EspWebhook.secret_encrypted,
                EspWebhook.public_key,
            ).where(EspWebhook.token == token, EspWebhook.provider == provider, EspWebhook.active)
        )
    ).first()


async def claim_esp_event(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    provider: str,
    event_id: str,
    message_id: uuid.UUID | None,
    outcome: str,
) -> bool:
    """Whether this is the first time the workspace's ESP event `event_id` is taken (in this transaction, with
    what it causes). A concurrent copy waits for this transaction and then finds it taken."""
    claimed = (
        insert(EspEventRow)
        .values(
            workspace_id=workspace_id,
            provider=provider,
            event_id=event_id,
            message_id=message_id,
            outcome=outcome,
        )
        .on_conflict_do_nothing()
        .returning(EspEventRow.event_id)
    )
    return (await session.execute(claimed)).first() is not None


async def count_for_domain(
    session: AsyncSession, message: Any, signal: Signal, now: datetime, clock: Clock
) -> None:
    """What came back about the message counts towards its sending domain's health, which it may pause."""
    change = await domain_health.count(on_session(session), message.sending_domain_id, signal, now, clock)
    if change is not None:
        log.warning(f"tracker.domain.{change.action}", message_id=str(message.id), **change.logged())
