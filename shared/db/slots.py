"""Loading a domain's reserved slots into the pure planner: shared by real planning and dry-runs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Message, SendingDomain
from shared.message_states import SLOT_HOLDING
from shared.planning import DomainSchedule, Reservation, Window


async def lock_domains(session: AsyncSession, domain_ids: Sequence[uuid.UUID]) -> None:
    """Serialise planners per sending domain for this transaction (sorted: no deadlocks).

    The exclusion constraint is the guarantee; the lock spares concurrent planners from colliding on it.
    """
    for domain_id in sorted(set(domain_ids)):
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": domain_id.int >> 65})


async def held_slots(
    session: AsyncSession,
    domains: Sequence[SendingDomain],
    earliest: datetime,
    excluding: Sequence[uuid.UUID] = (),
    excluding_campaign: uuid.UUID | None = None,
    lock: bool = True,
) -> dict[uuid.UUID, list[Reservation]]:
    """Every live reservation of these domains that could collide with a slot from `earliest` on.

    Older ones cannot overlap a new slot nor share its local day for the daily cap (hence two days back).
    `lock` is for planners that will write; a dry-run reads the same rows without it.
    """
    ids = [d.id for d in domains]
    if lock:
        await lock_domains(session, ids)
    query = select(Message.sending_domain_id, Message.scheduled_at, Message.slot_ends_at).where(
        Message.sending_domain_id.in_(ids),
        Message.status.in_(SLOT_HOLDING),
        Message.scheduled_at >= earliest - timedelta(days=2),
    )
    if excluding:
        query = query.where(Message.id.not_in(excluding))
    if excluding_campaign is not None:
        query = query.where(Message.campaign_id != excluding_campaign)
    found: dict[uuid.UUID, list[Reservation]] = {d: [] for d in ids}
    for domain_id, start, end in await session.execute(query):
        found[domain_id].append(Reservation(start, end))
    return found


async def domain_schedules(
    session: AsyncSession,
    domains: Sequence[SendingDomain],
    window: Window,
    earliest: datetime,
    excluding_campaign: uuid.UUID | None = None,
    lock: bool = True,
) -> dict[uuid.UUID, DomainSchedule]:
    held = await held_slots(session, domains, earliest, excluding_campaign=excluding_campaign, lock=lock)
    return {d.id: DomainSchedule(window, d.min_interval_seconds, held[d.id], d.daily_cap) for d in domains}
