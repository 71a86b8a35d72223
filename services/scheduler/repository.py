"""All SQL of the scheduler."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import (
    LIVE_SLOT_STATUSES,
    Campaign,
    CampaignKpi,
    CampaignKpiDay,
    CampaignLead,
    CampaignStatus,
    Message,
    MessageStatus,
    SendingDomain,
)
from shared.planning import Reservation

ACTIVE_CAMPAIGN = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)
UNFINISHED = (MessageStatus.PLANNED, MessageStatus.DISPATCHED, MessageStatus.SENDING)


async def lock_domains(session: AsyncSession, domain_ids: list[uuid.UUID]) -> None:
    """Serialise planners per sending domain for this transaction (sorted: no deadlocks).

    The exclusion constraint is the guarantee; the lock just spares concurrent planners from colliding on it.
    """
    for domain_id in sorted(domain_ids):
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": domain_id.int >> 65})


async def reservations(
    session: AsyncSession,
    domain_ids: list[uuid.UUID],
    since: datetime,
    excluding: list[uuid.UUID] = (),  # type: ignore[assignment]
) -> dict[uuid.UUID, list[Reservation]]:
    rows = await session.execute(
        select(Message.sending_domain_id, Message.scheduled_at, Message.slot_ends_at).where(
            Message.sending_domain_id.in_(domain_ids),
            Message.status.in_(LIVE_SLOT_STATUSES),
            Message.scheduled_at >= since,
            Message.id.not_in(excluding) if excluding else and_(True),
        )
    )
    found: dict[uuid.UUID, list[Reservation]] = {d: [] for d in domain_ids}
    for domain_id, start, end in rows:
        found[domain_id].append(Reservation(start, end))
    return found


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


async def insert_messages(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(Message), rows)


async def count_planned(session: AsyncSession, campaign_id: uuid.UUID, per_day: dict[date, int]) -> None:
    """KPI counters for newly planned messages (and days they moved to), in the planning transaction."""
    total = sum(per_day.values())
    await session.execute(
        update(CampaignKpi)
        .where(CampaignKpi.campaign_id == campaign_id)
        .values(planned=CampaignKpi.planned + total)
    )
    await shift_planned_days(session, campaign_id, per_day)


async def shift_planned_days(session: AsyncSession, campaign_id: uuid.UUID, per_day: dict[date, int]) -> None:
    changes = [{"campaign_id": campaign_id, "day": day, "planned": n} for day, n in per_day.items() if n]
    if changes:
        statement = insert(CampaignKpiDay).values(changes)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[CampaignKpiDay.campaign_id, CampaignKpiDay.day],
                set_={"planned": CampaignKpiDay.planned + statement.excluded.planned},
            )
        )


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> list[Any]:
    """Planned messages of active campaigns whose slot has come, locked for this transaction."""
    return list(
        (
            await session.execute(
                select(
                    Message.id,
                    Message.workspace_id,
                    Message.campaign_id,
                    Message.sending_domain_id,
                    Message.scheduled_at,
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
        ).all()
    )


async def mark_dispatched(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    if ids:
        await session.execute(
            update(Message)
            .where(Message.id.in_(ids), Message.status == MessageStatus.PLANNED)
            .values(status=MessageStatus.DISPATCHED)
        )


async def move_slot(session: AsyncSession, message_id: uuid.UUID, slot: Reservation) -> None:
    await session.execute(
        update(Message).where(Message.id == message_id).values(scheduled_at=slot.start, slot_ends_at=slot.end)
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
    return result.rowcount or 0  # type: ignore[attr-defined]


async def interrupt_stale_sending(session: AsyncSession, claimed_before: datetime) -> list[Any]:
    """A sender that died mid-transaction: at most once means `failed`/`interrupted`, never re-sent alone."""
    rows = await session.execute(
        update(Message)
        .where(Message.status == MessageStatus.SENDING, Message.claimed_at < claimed_before)
        .values(status=MessageStatus.FAILED, last_error="interrupted")
        .returning(Message.id, Message.campaign_id)
    )
    found = list(rows.all())
    for _, campaign_id in found:
        await session.execute(
            update(CampaignKpi)
            .where(CampaignKpi.campaign_id == campaign_id)
            .values(failed=CampaignKpi.failed + 1)
        )
    return found


async def complete_if_done(session: AsyncSession, campaign_id: uuid.UUID) -> bool:
    unfinished = await session.scalar(
        select(Message.id).where(Message.campaign_id == campaign_id, Message.status.in_(UNFINISHED)).limit(1)
    )
    if unfinished is not None:
        return False
    result = await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.RUNNING)
        .values(status=CampaignStatus.COMPLETED)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def reservation_horizon(earliest: datetime) -> datetime:
    # Reservations older than this cannot overlap a new slot, and cannot share its local day for the cap.
    return earliest - timedelta(days=2)
