"""Message state changes that more than one service makes (stop, unsubscribe, bounce all cancel)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import kpi
from shared.db.models import (
    Campaign,
    CampaignStatus,
    Lead,
    LeadStatus,
    Message,
    MessageEventRow,
    MessageStatus,
    Suppression,
)

UNSENT = (MessageStatus.PLANNED, MessageStatus.DISPATCHED)


async def mark_running(session: AsyncSession, campaign_id: uuid.UUID) -> None:
    """An SMTP transaction of the campaign happened: it runs. Locks the campaign before its KPI row (the order
    a stop or pause uses), so outcome and lifecycle transactions cannot deadlock."""
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.SCHEDULED)
        .values(status=CampaignStatus.RUNNING)
    )


async def cancel_unsent(session: AsyncSession, *where: Any) -> Counter[uuid.UUID]:
    """Cancel unsent messages matching `where`; frees their slots. Returns how many per campaign."""
    rows = await session.execute(
        update(Message)
        .where(Message.status.in_(UNSENT), *where)
        .values(status=MessageStatus.CANCELLED)
        .returning(Message.campaign_id)
    )
    per_campaign = Counter(campaign_id for (campaign_id,) in rows)
    for campaign_id, n in per_campaign.items():
        await kpi.bump(session, campaign_id, cancelled=n)
    return per_campaign


async def hard_bounce_lead(
    session: AsyncSession, lead_id: uuid.UUID, workspace_id: uuid.UUID, email: str, reason: str
) -> None:
    """Never mail this address again: lead bounced and address suppressed."""
    await session.execute(update(Lead).where(Lead.id == lead_id).values(status=LeadStatus.BOUNCED))
    await session.execute(
        insert(Suppression)
        .values(workspace_id=workspace_id, email=email.lower(), reason=f"hard bounce: {reason}"[:500])
        .on_conflict_do_nothing()
    )


async def record_event(
    session: AsyncSession, message: Any, kind: str, now: datetime, data: dict[str, Any]
) -> None:
    """One line of a message's history (`message` has `id` and `campaign_id`)."""
    session.add(
        MessageEventRow(
            message_id=message.id, campaign_id=message.campaign_id, kind=kind, occurred_at=now, data=data
        )
    )
