"""Scheduler use cases: plan a campaign's slots, dispatch what is due, reconcile lost or stuck work."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import repository as repo
from shared.clock import Clock
from shared.db.models import CampaignStatus, SendingDomain
from shared.events import SendMessage
from shared.messaging import enqueue
from shared.planning import DomainSchedule, Window, plan_round_robin
from shared.planning.slots import send_grace
from shared.settings import Settings

log = structlog.get_logger()


async def domain_schedules(
    session: AsyncSession,
    domains: list[SendingDomain],
    window: Window,
    earliest: datetime,
    excluding: list[uuid.UUID] | None = None,
) -> dict[uuid.UUID, DomainSchedule]:
    """Lock the domains and load every live reservation that could collide with a slot from `earliest` on."""
    ids = [d.id for d in domains]
    await repo.lock_domains(session, ids)
    held = await repo.reservations(session, ids, repo.reservation_horizon(earliest), excluding or [])
    return {d.id: DomainSchedule(window, d.min_interval_seconds, held[d.id], d.daily_cap) for d in domains}


class Scheduler:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock

    async def start_campaign(self, campaign_id: uuid.UUID) -> int:
        """Plan every audience lead once. Idempotent: a campaign that already has messages is left alone."""
        async with self._sessions() as session, session.begin():
            campaign = await repo.campaign_for_update(session, campaign_id)
            if campaign is None or campaign.status != CampaignStatus.SCHEDULED:
                return 0
            if await repo.has_messages(session, campaign_id):
                return 0
            leads = await repo.audience(session, campaign_id)
            by_name = await repo.sending_domains(session, campaign.workspace_id, campaign.domains)
            domains = [by_name[name] for name in campaign.domains]
            window = Window.from_dict(campaign.window)
            now = self._clock()
            earliest = max(now, campaign.start_at) if campaign.start_at else now
            schedules = await domain_schedules(session, domains, window, earliest)
            planned = plan_round_robin(leads, [d.id for d in domains], schedules, earliest)
            names = {d.id: d.domain for d in domains}
            await repo.insert_messages(
                session,
                [
                    {
                        "workspace_id": campaign.workspace_id,
                        "campaign_id": campaign.id,
                        "lead_id": lead,
                        "sending_domain_id": domain_id,
                        "domain_used": names[domain_id],
                        "scheduled_at": slot.start,
                        "slot_ends_at": slot.end,
                    }
                    for lead, domain_id, slot in planned
                ],
            )
            await repo.count_planned(
                session, campaign.id, Counter(window.local_date(s.start) for _, _, s in planned)
            )
        log.info("scheduler.campaign.planned", campaign_id=str(campaign_id), messages=len(planned))
        return len(planned)

    async def dispatch_due(self) -> int:
        """Publish `SendMessage` for due slots; one later than its grace gets a new slot."""
        now = self._clock()
        async with self._sessions() as session, session.begin():
            rows = await repo.claim_due(session, now, self._settings.dispatch_batch_size)
            due: list[tuple[Any, datetime]] = []
            late: list[tuple[Any, datetime]] = []
            for row in rows:
                deadline = row.scheduled_at + send_grace(
                    row.min_interval_seconds, self._settings.send_grace_seconds
                )
                (due if now <= deadline else late).append((row, deadline))
            await repo.mark_dispatched(session, [row.id for row, _ in due])
            await enqueue(
                session,
                *(
                    SendMessage(
                        workspace_id=row.workspace_id,
                        campaign_id=row.campaign_id,
                        message_id=row.id,
                        scheduled_at=row.scheduled_at,
                        deadline=deadline,
                    )
                    for row, deadline in due
                ),
            )
            if late:
                await self._replan_late(session, [row for row, _ in late], now)
        if rows:
            log.info("scheduler.dispatch.done", dispatched=len(due), replanned=len(late))
        return len(rows)

    async def _replan_late(self, session: AsyncSession, rows: list[Any], now: datetime) -> None:
        """A backlog never bursts: each late message takes its domain's next free slot from now."""
        for row in rows:
            campaign = await repo.campaign_for_update(session, row.campaign_id)
            domain = await session.get(SendingDomain, row.sending_domain_id)
            if campaign is None or domain is None:
                continue
            window = Window.from_dict(campaign.window)
            schedule = (await domain_schedules(session, [domain], window, now, excluding=[row.id]))[domain.id]
            slot = schedule.take(now)
            await repo.move_slot(session, row.id, slot)
            moved = Counter({window.local_date(slot.start): 1})
            moved[window.local_date(row.scheduled_at)] -= 1
            await repo.shift_planned_days(session, campaign.id, dict(moved))

    async def next_due_in(self) -> float | None:
        async with self._sessions() as session:
            due = await repo.next_due(session)
        return None if due is None else max(0.0, (due - self._clock()).total_seconds())

    async def reconcile(self) -> None:
        """The database rebuilds what the broker lost, and ends what a dead sender left half-done."""
        now = self._clock()
        async with self._sessions() as session, session.begin():
            released = await repo.release_lost_dispatches(session, now - timedelta(seconds=120))
            interrupted = await repo.interrupt_stale_sending(
                session, now - timedelta(seconds=self._settings.sending_lease_seconds)
            )
        if released or interrupted:
            log.warning("scheduler.reconcile.fixed", released=released, interrupted=len(interrupted))

    async def message_settled(self, campaign_id: uuid.UUID) -> None:
        async with self._sessions() as session, session.begin():
            if await repo.complete_if_done(session, campaign_id):
                log.info("scheduler.campaign.completed", campaign_id=str(campaign_id))
