"""All SQL of the scheduler."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from shared.db.models import (
    Campaign,
    CampaignLead,
    CampaignStatus,
    Lead,
    Message,
    MessageStatus,
    SendingDomain,
)
from shared.planning import Reservation
from shared.planning.slots import unplanned_reason

ACTIVE_CAMPAIGN = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)
UNSENT = (MessageStatus.PLANNED, MessageStatus.DISPATCHED)
UNFINISHED = (*UNSENT, MessageStatus.SENDING)
COPY_COLUMNS = (
    "id",
    "workspace_id",
    "campaign_id",
    "lead_id",
    "sending_domain_id",
    "domain_used",
    "scheduled_at",
    "slot_ends_at",
    "not_before",
    "status",
    "is_followup",
    "parent_message_id",
    "retry_count",
    "last_error",
)


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
    """A planned message as a COPY record (columns in COPY_COLUMNS order); without a slot (none free within
    the planner's horizon) a failed one that says so, holding no slot."""
    start, end = (slot.start, slot.end) if slot else (not_before, not_before)
    status = MessageStatus.PLANNED if slot else MessageStatus.FAILED
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


async def copy_messages(session: AsyncSession, rows: list[tuple[Any, ...]]) -> None:
    """Bulk insert through PostgreSQL's COPY, inside the session's transaction."""
    if not rows:
        return
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    await raw.driver_connection.copy_records_to_table("messages", records=rows, columns=COPY_COLUMNS)  # type: ignore[union-attr]


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
            Campaign.status.in_(ACTIVE_CAMPAIGN),
        )
        .order_by(Message.scheduled_at)
        .limit(limit)
        .with_for_update(of=Message, skip_locked=True)
    )
    return list((await session.execute(query)).all())


async def mark_dispatched(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    if ids:
        await session.execute(
            update(Message)
            .where(Message.id.in_(ids), Message.status == MessageStatus.PLANNED)
            .values(status=MessageStatus.DISPATCHED)
        )


async def unsent_for_update(session: AsyncSession, *where: Any) -> list[Message]:
    """Unsent messages (planned or dispatched), oldest slot first, locked."""
    rows = await session.scalars(
        select(Message)
        .where(Message.status.in_(UNSENT), *where)
        .order_by(Message.scheduled_at, Message.id)
        .with_for_update()
    )
    return list(rows)


async def fail_unplanned(session: AsyncSession, message_id: uuid.UUID, reason: str) -> bool:
    """An unsent message that no slot within the planner's horizon can take: failed, with the reason."""
    failed = await session.scalar(
        update(Message)
        .where(Message.id == message_id, Message.status.in_(UNSENT))
        .values(status=MessageStatus.FAILED, last_error=reason)
        .returning(Message.id)
    )
    return failed is not None


async def move_slot(session: AsyncSession, message_id: uuid.UUID, slot: Reservation) -> None:
    await session.execute(
        update(Message)
        .where(Message.id == message_id)
        .values(scheduled_at=slot.start, slot_ends_at=slot.end, status=MessageStatus.PLANNED)
    )


async def next_due(session: AsyncSession) -> datetime | None:
    return await session.scalar(
        select(func.min(Message.scheduled_at))
        .join(Campaign, Campaign.id == Message.campaign_id)
        .where(Message.status == MessageStatus.PLANNED, Campaign.status.in_(ACTIVE_CAMPAIGN))
    )


async def release_lost_dispatches(session: AsyncSession, before: datetime) -> int:
    """Dispatched messages nobody claimed by their deadline go back to planned (and get a new slot)."""
    result = await session.execute(
        update(Message)
        .where(Message.status == MessageStatus.DISPATCHED, Message.scheduled_at < before)
        .values(status=MessageStatus.PLANNED)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def interrupt_stale_sending(session: AsyncSession, claimed_before: datetime) -> list[Any]:
    """A sender that died mid-transaction: at most once means `failed`/`interrupted`, never re-sent alone."""
    rows = await session.execute(
        update(Message)
        .where(Message.status == MessageStatus.SENDING, Message.claimed_at < claimed_before)
        .values(status=MessageStatus.FAILED, last_error="interrupted")
        .returning(Message.id, Message.campaign_id)
    )
    return list(rows.all())


async def owes_followup(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    """A sent original whose follow-up is not planned yet (its `MessageSent` is still on its way), for a lead
    that may still get one: the campaign is not done."""
    followup = aliased(Message)
    owed = await session.scalar(
        select(Message.id)
        .join(Campaign, Campaign.id == Message.campaign_id)
        .join(Lead, Lead.id == Message.lead_id)
        .where(
            Message.campaign_id == campaign_id,
            Campaign.followup_enabled.is_(True),
            Message.is_followup.is_(False),
            Message.status == MessageStatus.SENT,
            Lead.status == "active",
            ~exists().where(followup.parent_message_id == Message.id),
        )
        .limit(1)
    )
    return owed is not None


async def active_campaigns_of_lead(session: AsyncSession, lead_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.scalars(
        select(Message.campaign_id)
        .join(Campaign, Campaign.id == Message.campaign_id)
        .where(Message.lead_id == lead_id, Campaign.status.in_(ACTIVE_CAMPAIGN))
        .distinct()
    )
    return sorted(rows)


async def complete_if_done(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    unfinished = await session.scalar(
        select(Message.id).where(Message.campaign_id == campaign_id, Message.status.in_(UNFINISHED)).limit(1)
    )
    if unfinished is not None or await owes_followup(session, campaign_id):
        return False
    result = await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.RUNNING)
        .values(status=CampaignStatus.COMPLETED)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


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
                Campaign.status.in_((*ACTIVE_CAMPAIGN, CampaignStatus.PAUSED)),
                Lead.status == "active",
            )
            .with_for_update(of=Campaign)
        )
    ).first()
    return None if row is None else (row[0], row[1], row[2])


async def has_followup(session: AsyncSession, message_id: uuid.UUID) -> bool:
    found = await session.scalar(select(Message.id).where(Message.parent_message_id == message_id).limit(1))
    return found is not None


async def release_dispatched(session: AsyncSession, campaign_id: uuid.UUID) -> None:
    await session.execute(
        update(Message)
        .where(Message.campaign_id == campaign_id, Message.status == MessageStatus.DISPATCHED)
        .values(status=MessageStatus.PLANNED)
    )
