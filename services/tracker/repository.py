"""All SQL of the tracker."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import kpi
from shared.db.messages import cancel_unsent, hard_bounce_lead, record_event
from shared.db.models import (
    Campaign,
    Lead,
    LeadStatus,
    Message,
    MessageEventRow,
    MessageStatus,
    Suppression,
)


async def unsubscribe(session: AsyncSession, message_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID] | None:
    """Lead unsubscribed, address suppressed, pending messages cancelled; counted once, on the first call.

    Returns (workspace, lead) when this call unsubscribed the lead, None when the message is unknown or the
    lead had already unsubscribed."""
    found = (
        await session.execute(select(Message.campaign_id, Message.lead_id).where(Message.id == message_id))
    ).first()
    if found is None:
        return None
    campaign_id, lead_id = found
    lead = await session.scalar(
        update(Lead)
        .where(Lead.id == lead_id, Lead.status != LeadStatus.UNSUBSCRIBED)
        .values(status=LeadStatus.UNSUBSCRIBED)
        .returning(Lead)
    )
    if lead is None:
        return None
    await session.execute(
        insert(Suppression)
        .values(workspace_id=lead.workspace_id, email=lead.email.lower(), reason="unsubscribed")
        .on_conflict_do_nothing()
    )
    await kpi.bump(session, campaign_id, lead_id, unsubscribed=1)
    await cancel_unsent(session, Message.lead_id == lead_id)
    return lead.workspace_id, lead_id


async def record_click(
    session: AsyncSession, message_id: uuid.UUID, now: datetime, data: dict[str, Any]
) -> bool:
    campaign_id = await session.scalar(select(Message.campaign_id).where(Message.id == message_id))
    if campaign_id is None:
        return False
    session.add(
        MessageEventRow(
            message_id=message_id, campaign_id=campaign_id, kind="clicked", occurred_at=now, data=data
        )
    )
    return True


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
            select(
                Message.id,
                Message.workspace_id,
                Message.campaign_id,
                Message.lead_id,
                Message.status,
                Campaign.window,
                Lead.email,
            )
            .join(Campaign, Campaign.id == Message.campaign_id)
            .join(Lead, Lead.id == Message.lead_id)
            .where(or_(*named))
            .order_by(Message.id != message_id)  # the VERP match wins over a quoted Message-ID
            .limit(1)
        )
    ).first()


async def record_hard_bounce(
    session: AsyncSession, message: Any, now: datetime, day: date, reason: str, data: dict[str, Any]
) -> bool:
    """sent → bounced, counted once (a repeated DSN changes nothing); the lead never gets mail again."""
    changed = await session.scalar(
        update(Message)
        .where(Message.id == message.id, Message.status == MessageStatus.SENT)
        .values(status=MessageStatus.BOUNCED, last_error=reason[:1000])
        .returning(Message.id)
    )
    if changed is None:
        return False
    await record_event(session, message, MessageStatus.BOUNCED, now, data)
    await kpi.bump(session, message.campaign_id, message.id, bounced=1)
    await kpi.bump_days(session, message.campaign_id, "bounced", {day: 1}, message.id)
    await hard_bounce_lead(session, message.lead_id, message.workspace_id, message.email, reason)
    await cancel_unsent(session, Message.lead_id == message.lead_id)
    return True


async def record_reply(session: AsyncSession, message: Any, now: datetime, data: dict[str, Any]) -> bool:
    """The lead replied: no more follow-ups for it. True the first time."""
    await record_event(session, message, "replied", now, data)
    replied = await session.scalar(
        update(Lead)
        .where(Lead.id == message.lead_id, Lead.status == LeadStatus.ACTIVE)
        .values(status=LeadStatus.REPLIED)
        .returning(Lead.id)
    )
    await cancel_unsent(session, Message.lead_id == message.lead_id, Message.is_followup.is_(True))
    return replied is not None
