"""All SQL of the sender: the at-most-once claim and the outcome, each in its own short transaction."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import kpi
from shared.db.messages import mark_running, record_event
from shared.db.models import (
    Campaign,
    CampaignStatus,
    Lead,
    LeadReport,
    LeadStatus,
    Message,
    MessageStatus,
    SendingDomain,
    Suppression,
    Template,
)

ACTIVE_CAMPAIGN = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)


async def campaign_is_active(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    """Under a share lock: a pause or stop waits for this transaction; one already committed is seen."""
    status = await session.scalar(
        select(Campaign.status).where(Campaign.id == campaign_id).with_for_update(read=True)
    )
    return status in ACTIVE_CAMPAIGN


async def claim(session: AsyncSession, message_id: uuid.UUID, now: datetime) -> Message | None:
    """dispatched → sending. None: a duplicate or a void command, nothing to do."""
    # The campaign row stays share-locked here: upgrading it (to mark the campaign running) while a sibling
    # claim shares it would deadlock, so that happens when the outcome is recorded.
    return await session.scalar(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.DISPATCHED)
        .values(status=MessageStatus.SENDING, claimed_at=now)
        .returning(Message)
    )


async def release_late(session: AsyncSession, message_id: uuid.UUID) -> None:
    """Past its deadline: back to planned, so the dispatcher gives it a new slot instead of sending late."""
    await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.DISPATCHED)
        .values(status=MessageStatus.PLANNED)
    )


async def take_domain_turn(
    session: AsyncSession, domain_id: uuid.UUID, now: datetime, gap: timedelta
) -> datetime | None:
    """Record `now` as the domain's last send unless one began less than `gap` ago. None: this transaction
    has the turn; else when the domain may send again.

    The updated row stays locked until the claim commits, so concurrent senders of one domain queue here
    and each re-reads the time its predecessor wrote: N workers can never burst one domain."""
    if gap <= timedelta(0):
        return None
    taken = await session.scalar(
        update(SendingDomain)
        .where(
            SendingDomain.id == domain_id,
            or_(SendingDomain.last_send_at.is_(None), SendingDomain.last_send_at <= now - gap),
        )
        .values(last_send_at=now)
        .returning(SendingDomain.id)
    )
    if taken is not None:
        return None
    last = await session.scalar(select(SendingDomain.last_send_at).where(SendingDomain.id == domain_id))
    assert last is not None
    return last + gap


async def mark_domain_send(session: AsyncSession, domain_id: uuid.UUID, at: datetime) -> None:
    await session.execute(
        update(SendingDomain)
        .where(SendingDomain.id == domain_id)
        .values(last_send_at=func.greatest(SendingDomain.last_send_at, at))
    )


async def defer(session: AsyncSession, message_id: uuid.UUID, not_before: datetime) -> None:
    """Back to planned, to be given a new slot at or after `not_before`; not a try, so no retry is spent."""
    await session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(status=MessageStatus.PLANNED, not_before=not_before)
    )


async def is_suppressed(session: AsyncSession, workspace_id: uuid.UUID, email: str) -> bool:
    domain = email.rsplit("@", 1)[-1].lower()
    labels = domain.split(".")
    parents = [".".join(labels[i:]) for i in range(len(labels))]
    found = await session.scalar(
        select(Suppression.id)
        .where(
            Suppression.workspace_id == workspace_id,
            (func.lower(Suppression.email) == email.lower()) | func.lower(Suppression.domain).in_(parents),
        )
        .limit(1)
    )
    return found is not None


def may_receive(lead: Lead, is_followup: bool) -> bool:
    if lead.status in (LeadStatus.UNSUBSCRIBED, LeadStatus.BOUNCED):
        return False
    return not (is_followup and lead.status == LeadStatus.REPLIED)


async def context(
    session: AsyncSession, message: Message
) -> tuple[Lead, Template, SendingDomain, Campaign, str | None]:
    campaign = await session.get_one(Campaign, message.campaign_id)
    parent_smtp_id = None
    if message.parent_message_id is not None:
        parent_smtp_id = await session.scalar(
            select(Message.smtp_message_id).where(Message.id == message.parent_message_id)
        )
    return (
        await session.get_one(Lead, message.lead_id),
        await session.get_one(Template, campaign.template_id),
        await session.get_one(SendingDomain, message.sending_domain_id),
        campaign,
        parent_smtp_id,
    )


async def report_of(session: AsyncSession, lead_id: uuid.UUID) -> tuple[str, bytes] | None:
    row = (
        await session.execute(
            select(LeadReport.filename, LeadReport.content).where(LeadReport.lead_id == lead_id)
        )
    ).first()
    return None if row is None else (row.filename, row.content)


async def set_smtp_message_id(session: AsyncSession, message_id: uuid.UUID, smtp_message_id: str) -> None:
    await session.execute(
        update(Message).where(Message.id == message_id).values(smtp_message_id=smtp_message_id)
    )


async def cancel(session: AsyncSession, message: Message, reason: str) -> None:
    await session.execute(
        update(Message)
        .where(Message.id == message.id)
        .values(status=MessageStatus.CANCELLED, last_error=reason)
    )
    await kpi.bump(session, message.campaign_id, message.id, cancelled=1)


async def settle(
    session: AsyncSession,
    message: Message,
    status: MessageStatus,
    now: datetime,
    day: date,
    error: str | None,
    data: dict[str, Any],
) -> bool:
    """sending → outcome, with its KPI counters and event row; guarded, so a repeat changes nothing."""
    changed = await session.scalar(
        update(Message)
        .where(Message.id == message.id, Message.status == MessageStatus.SENDING)
        .values(status=status, last_error=error, sent_at=now if status != MessageStatus.FAILED else None)
        .returning(Message.id)
    )
    if changed is None:
        return False
    await mark_running(session, message.campaign_id)
    await record_event(session, message, status, now, data)
    if status == MessageStatus.SENT:
        await kpi.bump(session, message.campaign_id, message.id, sent_at=now, sent=1)
        await kpi.bump_days(session, message.campaign_id, "sent", {day: 1}, message.id)
    elif status == MessageStatus.BOUNCED:
        await kpi.bump(session, message.campaign_id, message.id, bounced=1, bounced_at_smtp=1)
        await kpi.bump_days(session, message.campaign_id, "bounced", {day: 1}, message.id)
    else:
        await kpi.bump(session, message.campaign_id, message.id, failed=1)
    return True


async def plan_retry(
    session: AsyncSession,
    message: Message,
    now: datetime,
    retry_at: datetime,
    error: str,
    data: dict[str, Any],
) -> bool:
    """sending → planned again: it waits for its retry as `planned`, with its slot to be chosen by the
    dispatcher at or after `retry_at` (its old, past slot makes it due at once for re-planning)."""
    changed = await session.scalar(
        update(Message)
        .where(Message.id == message.id, Message.status == MessageStatus.SENDING)
        .values(
            status=MessageStatus.PLANNED,
            retry_count=Message.retry_count + 1,
            not_before=retry_at,
            last_error=error,
        )
        .returning(Message.id)
    )
    if changed is None:
        return False
    await mark_running(session, message.campaign_id)
    await record_event(
        session, message, MessageStatus.FAILED, now, {**data, "retry_at": retry_at.isoformat()}
    )
    return True
