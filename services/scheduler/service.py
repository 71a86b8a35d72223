"""Scheduler use cases: plan slots, dispatch what is due, re-plan, follow up, cancel, reconcile."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter as Metric
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import repository as repo
from shared.clock import Clock
from shared.db import message_store
from shared.db import providers as provider_store
from shared.db.message_store import on_session
from shared.db.models import Campaign, CampaignStatus, Message, SendingDomain
from shared.db.slots import domain_schedules, lead_providers, load_domains
from shared.events import SendMessage
from shared.lifecycle import SENDS
from shared.planning import DomainSchedule, Reservation, Window, plan_round_robin
from shared.planning.slots import NoSlotError, followup_due, send_grace
from shared.settings import Settings

log = structlog.get_logger()
DISPATCHED = Metric("maildash_scheduler_dispatched_total", "SendMessage commands issued")
REPLANNED = Metric("maildash_scheduler_replanned_total", "Messages moved to a new slot", ["why"])


class Scheduler:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        # Set when a campaign wants its recipients' providers known (`services/scheduler/providers.py`).
        self.providers_wanted = asyncio.Event()

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
            earliest = max(self._clock(), campaign.start_at or self._clock())
            schedules, providers = await domain_schedules(
                session, domains, window, earliest, self._settings.pace_rules, leads
            )
            planned = plan_round_robin(leads, [d.id for d in domains], schedules, earliest, providers)
            names = {d.id: d.domain for d in domains}
            await message_store.plan(
                on_session(session),
                campaign.id,
                [
                    repo.new_message(campaign, lead, domain_id, names[domain_id], slot, not_before=earliest)
                    for lead, domain_id, slot in planned
                ],
                Counter(window.local_date(slot.start) for *_, slot in planned if slot is not None),
            )
            await provider_store.want_campaign(on_session(session), campaign.id, self._clock())
            unplanned = sum(slot is None for *_, slot in planned)
        self.providers_wanted.set()
        log.info(
            "scheduler.campaign.planned",
            campaign_id=str(campaign_id),
            messages=len(planned),
            failed=unplanned,
        )
        return len(planned)

    async def dispatch_due(self) -> int:
        """Publish `SendMessage` for due slots. One past its grace, or one whose slot lies before its
        `not_before` (a retry waiting for its backoff), gets a new slot: a backlog never bursts."""
        now = self._clock()
        async with self._sessions() as session, session.begin():
            rows = await repo.claim_due(session, now, self._settings.dispatch_batch_size)
            due: list[tuple[Any, datetime]] = []
            replanned: list[uuid.UUID] = []
            for row in rows:
                deadline = row.scheduled_at + send_grace(
                    row.min_interval_seconds, self._settings.send_grace_seconds
                )
                # A retry or resend keeps its old slot until re-planned at or after its `not_before`.
                if now <= deadline and row.not_before <= row.scheduled_at:
                    due.append((row, deadline))
                else:
                    replanned.append(row.id)
            await message_store.dispatch(
                on_session(session),
                [
                    SendMessage(
                        workspace_id=row.workspace_id,
                        campaign_id=row.campaign_id,
                        message_id=row.id,
                        scheduled_at=row.scheduled_at,
                        deadline=deadline,
                    )
                    for row, deadline in due
                ],
            )
            if replanned:
                again = await repo.unsent_for_update(session, Message.id.in_(replanned))
                await self.replan(session, again, now, "due again")
        DISPATCHED.inc(len(due))
        if rows:
            log.info("scheduler.dispatch.done", dispatched=len(due), replanned=len(replanned))
        return len(rows)

    async def replan(
        self, session: AsyncSession, messages: Sequence[Message], now: datetime, why: str
    ) -> None:
        """Free the messages' slots and give each its domain's earliest free slot at or after
        max(now, not_before), in their current order. Moves their timeline days with them."""
        if not messages:
            return
        domains = {
            m.sending_domain_id: await session.get_one(SendingDomain, m.sending_domain_id) for m in messages
        }
        windows = {
            m.campaign_id: Window.from_dict((await session.get_one(Campaign, m.campaign_id)).window)
            for m in messages
        }
        rules = self._settings.pace_rules
        loads = await load_domains(session, list(domains.values()), now, rules, [m.id for m in messages])
        providers = await lead_providers(session, loads.values(), [m.lead_id for m in messages])
        # One schedule per (campaign, domain): windows differ by campaign, slots are shared by domain.
        schedules: dict[tuple[uuid.UUID, uuid.UUID], DomainSchedule] = {}
        for message in messages:
            key = (message.campaign_id, message.sending_domain_id)
            load = loads[message.sending_domain_id]
            if key not in schedules:
                schedules[key] = load.schedule(windows[message.campaign_id])
            provider = providers.get(message.lead_id)
            try:
                slot = schedules[key].take(max(now, message.not_before), provider)
            except NoSlotError as error:  # nothing free within the horizon: the message fails, not the batch
                await self._fail_unplanned(session, message, str(error))
                continue
            load.reservations.append(slot)
            if provider in load.provider_sends:
                load.provider_sends[provider].append(slot.start)
            for (_, domain_id), other in schedules.items():
                if domain_id == load.domain.id and other is not schedules[key]:
                    other.reserve(slot.start, provider)
            window = windows[message.campaign_id]
            await message_store.reslot(
                on_session(session),
                message.id,
                slot.start,
                slot.end,
                window.local_date(message.scheduled_at),
                window.local_date(slot.start),
            )
        REPLANNED.labels(why).inc(len(messages))

    @staticmethod
    async def _fail_unplanned(session: AsyncSession, message: Message, reason: str) -> None:
        if await message_store.fail_without_slot(on_session(session), message.id, reason):
            await message_store.complete_if_done(on_session(session), message.campaign_id)
            log.warning("scheduler.message.unplanned", message_id=str(message.id), reason=reason)

    async def resume_campaign(self, campaign_id: uuid.UUID) -> None:
        """All unsent messages planned again from max(now, start_at); their old slots are freed."""
        async with self._sessions() as session, session.begin():
            campaign = await repo.campaign_for_update(session, campaign_id)
            if campaign is None or campaign.status not in SENDS:
                return
            now = max(self._clock(), campaign.start_at or self._clock())
            messages = await repo.unsent_for_update(session, Message.campaign_id == campaign_id)
            await self.replan(session, messages, now, "resume")
        log.info("scheduler.campaign.resumed", campaign_id=str(campaign_id), replanned=len(messages))

    async def pause_campaign(self, campaign_id: uuid.UUID) -> None:
        """Commands already on their way are void (the sender refuses a paused campaign): take them back."""
        async with self._sessions() as session, session.begin():
            await message_store.release_campaign(on_session(session), campaign_id)

    async def stop_campaign(self, campaign_id: uuid.UUID) -> None:
        """The api cancels at once; this catches what was planned meanwhile (a follow-up racing the stop)."""
        async with self._sessions() as session, session.begin():
            await message_store.cancel_campaign(on_session(session), campaign_id)

    async def plan_followup(self, message_id: uuid.UUID) -> bool:
        """One follow-up per sent original, on the same domain, at the first free slot at or after
        sent_at + days. Idempotent: a second `MessageSent` finds the follow-up already there."""
        async with self._sessions() as session, session.begin():
            found = await repo.followup_context(session, message_id)
            if found is None or await repo.has_followup(session, message_id):
                return False
            original, campaign, _ = found
            assert original.sent_at is not None
            window = Window.from_dict(campaign.window)
            due = max(self._clock(), followup_due(window, original.sent_at, campaign.followup_days))
            domain = await session.get_one(SendingDomain, original.sending_domain_id)
            schedules, providers = await domain_schedules(
                session, [domain], window, due, self._settings.pace_rules, [original.lead_id]
            )
            try:
                slot: Reservation | None = schedules[domain.id].take(due, providers.get(original.lead_id))
            except NoSlotError:
                slot = None  # it fails, saying there was no slot
            followup = repo.new_message(
                campaign,
                original.lead_id,
                domain.id,
                domain.domain,
                slot,
                not_before=due,
                parent_id=original.id,
            )
            days = {window.local_date(slot.start): 1} if slot is not None else {}
            await message_store.plan(on_session(session), campaign.id, [followup], days)
        log.info(
            "scheduler.followup.planned",
            parent_id=str(message_id),
            scheduled_at=slot.start.isoformat() if slot else None,
        )
        return True

    async def lead_left(self, lead_id: uuid.UUID, only_followups: bool = False) -> None:
        """A lead that bounced or unsubscribed is never mailed again, one that replied gets no follow-up:
        its pending messages are cancelled (the tracker may have done so already), which may finish the
        campaigns that were waiting only for them."""
        async with self._sessions() as session, session.begin():
            await message_store.cancel_lead(on_session(session), lead_id, only_followups)
            for campaign_id in await repo.active_campaigns_of_lead(session, lead_id):
                await message_store.complete_if_done(on_session(session), campaign_id)

    async def message_settled(self, campaign_id: uuid.UUID) -> None:
        async with self._sessions() as session, session.begin():
            if await message_store.complete_if_done(on_session(session), campaign_id):
                log.info("scheduler.campaign.completed", campaign_id=str(campaign_id))

    async def next_due_in(self) -> float | None:
        async with self._sessions() as session:
            due = await repo.next_due(session)
        return None if due is None else max(0.0, (due - self._clock()).total_seconds())

    async def reconcile(self) -> None:
        """The database rebuilds what the broker lost, and ends what a dead sender left half-done."""
        now = self._clock()
        async with self._sessions() as session, session.begin():
            db = on_session(session)
            released = await message_store.release_lost(db, now - timedelta(seconds=120))
            lease = timedelta(seconds=self._settings.sending_lease_seconds)
            interrupted = await message_store.interrupt(db, now - lease)
            for campaign_id in sorted(interrupted):
                await message_store.complete_if_done(db, campaign_id)
        if released or interrupted:
            log.warning("scheduler.reconcile.fixed", released=released, interrupted=sum(interrupted.values()))
