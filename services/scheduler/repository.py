"""The scheduler's reads; what it changes is a transition of `shared.db.message_store`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Campaign, CampaignLead, Lead, Message, SendingDomain
from shared.lifecycle import SENDS
from shared.message_states import TRANSITIONS, UNSENT, CampaignStatus, LeadStatus, MessageStatus
from shared.planning import Reservation
from shared.planning.slots import unplanned_reason


async def campaign_for_update(session: AsyncSession, campaign_id: uuid.UUID) -> Campaign | None:
    return await session.get(Campaign, campaign_id, with_for_update=True)


async def has_messages(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    found = await session.scalar(select(Message.id).where(Message.campaign_id == campaign_id).limit(1))
    return found is not None


async def audience(session: AsyncSession, campaign_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(CampaignLead.lead_id)
        .where(CampaignLead.campaign_id == campaign_id)
        .order_by(CampaignLead.position)
    )
    return list(rows)


async def sending_domains(
    session: AsyncSession, workspace_id: uuid.UUID, names: list[str]
) -> dict[str, SendingDomain]:
    rows = await session.scalars(
        select(SendingDomain).where(
            SendingDomain.workspace_id == workspace_id, SendingDomain.domain.in_(names)
        )
    )
    return {row.domain: row for row in rows}


def new_message(
    campaign: Campaign,
    lead_id: uuid.UUID,
    domain_id: uuid.UUID,
    domain_name: str,
    slot: Reservation | None,
    not_before: datetime,
    parent_id: uuid.UUID | None = None,
) -> tuple[Any, ...]:
    """A planned message as a COPY record (columns in `message_store.COPY_COLUMNS` order); without a slot
    (none free within the planner's horizon) a failed one that says so, holding no slot."""
    start, end = (slot.start, slot.end) if slot else (not_before, not_before)
    status = TRANSITIONS["plan" if slot else "plan_without_slot"].target
    assert status is not None
    return (
        uuid.uuid4(),
        campaign.workspace_id,
        campaign.id,
        lead_id,
        domain_id,
        domain_name,
        start,
        end,
        not_before,
        status.value,
        parent_id is not None,
        parent_id,
        0,
        None if slot else unplanned_reason(not_before),
    )


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> list[Any]:
    """Planned messages of active campaigns whose slot has come, locked for this transaction."""
    query = (
        select(
            Message.id,
            Message.workspace_id,
            Message.campaign_id,
            Message.sending_domain_id,
            Message.scheduled_at,
            Message.not_before,
            SendingDomain.min_interval_seconds,
        )
        .join(Campaign, Campaign.id == Message.campaign_id)
        .join(SendingDomain, SendingDomain.id == Message.sending_domain_id)
        .where(
            Message.status == MessageStatus.PLANNED,
            Message.scheduled_at <= now,
            Campaign.status.in_(SENDS),
        )
        .order_by(Message.scheduled_at)
        .limit(limit)
        .with_for_update(of=Message, skip_locked=True)
    )
    return list((await session.execute(query)).all())


async def unsent_for_update(session: AsyncSession, *where: Any) -> list[Message]:
    """Unsent messages (planned or dispatched), oldest slot first, locked."""
    rows = await session.scalars(
        select(Message)
        .where(Message.status.in_(UNSENT), *where)
        .order_by(Message.scheduled_at, Message.id)
        .with_for_update()
    )
    return list(rows)


async def next_due(session: AsyncSession) -> datetime | None:
    return await session.scalar(
        select(func.min(Message.scheduled_at))
        .join(Campaign, Campaign.id == Message.campaign_id)
        .where(Message.status == MessageStatus.PLANNED, Campaign.status.in_(SENDS))
    )


async def active_campaigns_of_lead(session: AsyncSession, lead_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(Message.campaign_id)
        .join(Campaign, Campaign.id == Message.campaign_id)
        .where(Message.lead_id == lead_id, Campaign.status.in_(SENDS))
        .distinct()
    )
    return sorted(rows)


async def followup_context(
    session: AsyncSession, message_id: uuid.UUID
) -> tuple[Message, Campaign, Lead] | None:
    """A sent original message whose campaign wants a follow-up and whose lead may still get one."""
    row = (
        await session.execute(
            select(Message, Campaign, Lead)
            .join(Campaign, Campaign.id == Message.campaign_id)
            .join(Lead, Lead.id == Message.lead_id)
            .where(
                Message.id == message_id,
                Message.status == MessageStatus.SENT,
                Message.is_followup.is_(False),
                Campaign.followup_enabled.is_(True),
                Campaign.status.in_(SENDS | {CampaignStatus.PAUSED}),
                Lead.status == LeadStatus.ACTIVE,
            )
            .with_for_update(of=Campaign)
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2])


async def has_followup(session: AsyncSession, message_id: uuid.UUID) -> bool:
    found = await session.scalar(select(Message.id).where(Message.parent_message_id == message_id).limit(1))
    return found is not None
