"""All SQL of the sender: the at-most-once claim and the outcome, each in its own short transaction."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import (
    Campaign,
    CampaignKpi,
    CampaignKpiDay,
    CampaignStatus,
    Lead,
    LeadStatus,
    Message,
    MessageEventRow,
    MessageStatus,
    SendingDomain,
    Suppression,
    Template,
)

ACTIVE_CAMPAIGN = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)


async def claim(session: AsyncSession, message_id: uuid.UUID, now: datetime) -> Message | None:
    """dispatched → sending, only while the campaign is active. None: a duplicate, or nothing to do."""
    claimed = await session.scalar(
        update(Message)
        .where(
            Message.id == message_id,
            Message.status == MessageStatus.DISPATCHED,
            Message.campaign_id.in_(select(Campaign.id).where(Campaign.status.in_(ACTIVE_CAMPAIGN))),
        )
        .values(status=MessageStatus.SENDING, claimed_at=now)
        .returning(Message)
    )
    if claimed is not None:
        await session.execute(
            update(Campaign)
            .where(Campaign.id == claimed.campaign_id, Campaign.status == CampaignStatus.SCHEDULED)
            .values(status=CampaignStatus.RUNNING)
        )
    return claimed


async def release_late(session: AsyncSession, message_id: uuid.UUID) -> None:
    """Past its deadline: back to planned, so the dispatcher gives it a new slot instead of sending late."""
    await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == MessageStatus.DISPATCHED)
        .values(status=MessageStatus.PLANNED)
    )


async def context(session: AsyncSession, message: Message) -> tuple[Lead, Template, SendingDomain, Campaign]:
    campaign = await session.get_one(Campaign, message.campaign_id)
    return (
        await session.get_one(Lead, message.lead_id),
        await session.get_one(Template, campaign.template_id),
        await session.get_one(SendingDomain, message.sending_domain_id),
        campaign,
    )


async def set_smtp_message_id(session: AsyncSession, message_id: uuid.UUID, smtp_message_id: str) -> None:
    await session.execute(
        update(Message).where(Message.id == message_id).values(smtp_message_id=smtp_message_id)
    )


async def settle(
    session: AsyncSession,
    message: Message,
    status: MessageStatus,
    now: datetime,
    day: date,
    error: str | None,
    data: dict[str, Any],
) -> bool:
    """sending → outcome, with its KPI counters and event row, guarded so a repeat changes nothing."""
    changed = await session.scalar(
        update(Message)
        .where(Message.id == message.id, Message.status == MessageStatus.SENDING)
        .values(status=status, last_error=error, sent_at=now if status != MessageStatus.FAILED else None)
        .returning(Message.id)
    )
    if changed is None:
        return False
    session.add(
        MessageEventRow(
            message_id=message.id, campaign_id=message.campaign_id, kind=status, occurred_at=now, data=data
        )
    )
    counters: dict[str, Any] = {}
    if status == MessageStatus.SENT:
        counters = {
            "sent": CampaignKpi.sent + 1,
            "first_sent_at": func.least(func.coalesce(CampaignKpi.first_sent_at, now), now),
            "last_sent_at": func.greatest(func.coalesce(CampaignKpi.last_sent_at, now), now),
        }
    elif status == MessageStatus.BOUNCED:
        counters = {"bounced": CampaignKpi.bounced + 1, "bounced_at_smtp": CampaignKpi.bounced_at_smtp + 1}
    elif status == MessageStatus.FAILED:
        counters = {"failed": CampaignKpi.failed + 1}
    await session.execute(
        update(CampaignKpi).where(CampaignKpi.campaign_id == message.campaign_id).values(counters)
    )
    if status in (MessageStatus.SENT, MessageStatus.BOUNCED):
        column = "sent" if status == MessageStatus.SENT else "bounced"
        statement = insert(CampaignKpiDay).values(campaign_id=message.campaign_id, day=day, **{column: 1})
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[CampaignKpiDay.campaign_id, CampaignKpiDay.day],
                set_={column: getattr(CampaignKpiDay, column) + 1},
            )
        )
    return True


async def hard_bounce_lead(session: AsyncSession, lead: Lead, reason: str) -> None:
    """Never mail this address again: lead bounced and address suppressed."""
    await session.execute(update(Lead).where(Lead.id == lead.id).values(status=LeadStatus.BOUNCED))
    await session.execute(
        insert(Suppression)
        .values(
            workspace_id=lead.workspace_id, email=lead.email.lower(), reason=f"hard bounce: {reason}"[:500]
        )
        .on_conflict_do_nothing()
    )
