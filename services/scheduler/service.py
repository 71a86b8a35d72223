"""Scheduler use cases: plan slots, dispatch what is due, re-plan, follow up, cancel, reconcile."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter as Metric
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler import repository as repo
from shared import sequences, tracing
from shared.clock import Clock
from shared.db import domain_health, message_store, retention
from shared.db import providers as provider_store
from shared.db.message_store import on_session
from shared.db.models import Campaign, CampaignStatus, Message, MessageStatus, SendingDomain
from shared.db.slots import domain_schedules, lead_providers, lead_windows, load_domains
from shared.events import SendMessage
from shared.lifecycle import SENDS
from shared.planning import DomainSchedule, Reservation, Window, plan_round_robin
from shared.planning.slots import NoSlotError, followup_due, send_grace
from shared.reputation import DomainState, planned_on
from shared.sequences import Verdict
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
            by_name = await repo.sending_domains(session, campaign.workspace_id, campaign.domains)
            domains = planned_on(
                [by_name[name] for name in campaign.domains], campaign.reassign_on_domain_pause
            )
            window = Window.from_dict(campaign.window)
            earliest = max(self._clock(), campaign.start_at or self._clock())
            leads, windows = await repo.audience(session, campaign, window, earliest.year)
            schedules, providers = await domain_schedules(
                session, domains, window, earliest, self._settings.pace_rules, leads
            )
            planned = plan_round_robin(
                leads, [d.id for d in domains], schedules, earliest, providers, windows
            )
            # Every SendMessage dispatched for it, however much later, continues the trace it was planned in.
            if (trace_context := tracing.carrier()) is not None:
                campaign.trace_context = trace_context
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
            verdicts = await self._verdicts(session, rows)
            due: list[tuple[Any, datetime]] = []
            replanned: list[uuid.UUID] = []
            for row in rows:
                if row.id in verdicts:
                    continue  # withdrawn below, in a transaction of its own
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
        for row in rows:
            if row.id in verdicts:
                await self._withdraw(row.id, row.campaign_id, verdicts[row.id], now)
        DISPATCHED.inc(len(due))
        if rows:
            log.info(
                "scheduler.dispatch.done",
                dispatched=len(due),
                replanned=len(replanned),
                withdrawn=len(verdicts),
            )
        return len(rows)

    async def _verdicts(self, session: AsyncSession, rows: Sequence[Any]) -> dict[uuid.UUID, Verdict]:
        """The due steps of sequences that do not go: a stop rule took hold, or their condition fails."""
        evidence = await repo.sequence_evidence(session, [row.id for row in rows if row.step > 0])
        verdicts = {id_: sequences.at_dispatch(*found) for id_, found in evidence.items()}
        return {id_: verdict for id_, verdict in verdicts.items() if verdict.action != "send"}

    async def _withdraw(
        self, message_id: uuid.UUID, campaign_id: uuid.UUID, verdict: Verdict, now: datetime
    ) -> None:
        """A step that does not go is cancelled, saying why; a skipped one hands over to the next step, due
        its delay after the skipped step's slot. The campaign is locked first, as a stop locks it."""
        assert verdict.last_error is not None
        name = "skip" if verdict.action == "skip" else "stop_sequence"
        async with self._sessions() as session, session.begin():
            await repo.campaign_for_update(session, campaign_id)
            db = on_session(session)
            if not await message_store.withdraw(db, message_id, name, verdict.last_error, now):
                return
            if name == "skip":
                await self._plan_next_step(session, message_id)
            await message_store.complete_if_done(db, campaign_id, now)
        log.info("scheduler.step.withdrawn", message_id=str(message_id), why=verdict.last_error)

    async def replan(
        self,
        session: AsyncSession,
        messages: Sequence[Message],
        now: datetime,
        why: str,
        moves: Mapping[uuid.UUID, SendingDomain] | None = None,
    ) -> None:
        """Free the messages' slots and give each its domain's earliest free slot at or after
        max(now, not_before), in their current order (in its lead's own window, for a campaign in recipient
        mode); a message in `moves` takes its slot on the domain it names instead of its own. Moves their
        timeline days with them."""
        if not messages:
            return
        moves = moves or {}
        target = {m.id: moves[m.id].id if m.id in moves else m.sending_domain_id for m in messages}
        domains = {d: await session.get_one(SendingDomain, d) for d in set(target.values())}
        campaigns = {m.campaign_id: await session.get_one(Campaign, m.campaign_id) for m in messages}
        windows = {campaign_id: Window.from_dict(c.window) for campaign_id, c in campaigns.items()}
        own = await self._lead_windows(session, messages, campaigns, windows, now)
        rules = self._settings.pace_rules
        loads = await load_domains(session, list(domains.values()), now, rules, [m.id for m in messages])
        providers = await lead_providers(session, loads.values(), [m.lead_id for m in messages])
        await message_store.vacate(on_session(session), [m.id for m in messages])
        # One schedule per (campaign, domain): windows differ by campaign, slots are shared by domain.
        schedules: dict[tuple[uuid.UUID, uuid.UUID], DomainSchedule] = {}
        for message in messages:
            load = loads[target[message.id]]
            key = (message.campaign_id, load.domain.id)
            if key not in schedules:
                schedules[key] = load.schedule(windows[message.campaign_id])
            provider = providers.get(message.lead_id)
            try:
                slot = schedules[key].take(
                    max(now, message.not_before), provider, own.get((message.campaign_id, message.lead_id))
                )
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
                (load.domain.id, load.domain.domain),
            )
        REPLANNED.labels(why).inc(len(messages))

    @staticmethod
    async def _lead_windows(
        session: AsyncSession,
        messages: Sequence[Message],
        campaigns: Mapping[uuid.UUID, Campaign],
        windows: Mapping[uuid.UUID, Window],
        now: datetime,
    ) -> dict[tuple[uuid.UUID, uuid.UUID], Window]:
        """The own windows of the messages' leads, per (campaign, lead), for campaigns in recipient mode
        (`lead_windows` answers none for the others, without a query)."""
        leads: dict[uuid.UUID, set[uuid.UUID]] = {}
        for message in messages:
            leads.setdefault(message.campaign_id, set()).add(message.lead_id)
        own: dict[tuple[uuid.UUID, uuid.UUID], Window] = {}
        for campaign_id, ids in leads.items():
            mode = campaigns[campaign_id].window_mode
            found = await lead_windows(session, windows[campaign_id], mode, ids, now.year)
            own.update({(campaign_id, lead): window for lead, window in found.items()})
        return own

    async def _fail_unplanned(self, session: AsyncSession, message: Message, reason: str) -> None:
        if await message_store.fail_without_slot(on_session(session), message.id, reason):
            await message_store.complete_if_done(on_session(session), message.campaign_id, self._clock())
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

    async def domain_paused(self, domain_id: uuid.UUID) -> None:
        """Commands on their way from a paused domain are void (the sender refuses them): take them back. The
        unsent initial messages of campaigns that allow it move to their domains still active, round-robin in
        their order; follow-ups stay on their domain (their thread), the rest wait for its resume."""
        now = self._clock()
        moved = 0
        async with self._sessions() as session, session.begin():
            if await repo.paused_domain(session, domain_id) is None:  # resumed since
                return
            await message_store.release_domain(on_session(session), domain_id)
            for campaign in await repo.reassigning_campaigns(session, domain_id):
                healthy = await repo.active_domains(session, campaign)
                if not healthy:
                    continue
                messages = await repo.unsent_for_update(
                    session,
                    Message.campaign_id == campaign.id,
                    Message.sending_domain_id == domain_id,
                    Message.is_followup.is_(False),
                )
                moves = {m.id: healthy[i % len(healthy)] for i, m in enumerate(messages)}
                await self.replan(
                    session, messages, max(now, campaign.start_at or now), "domain paused", moves
                )
                moved += len(messages)
        log.info("scheduler.domain.paused", domain_id=str(domain_id), moved=moved)

    async def domain_resumed(self, domain_id: uuid.UUID) -> None:
        """Everything the domain holds for campaigns that send is planned again from now, as a campaign
        resume plans its messages (a paused campaign's wait for its own resume)."""
        async with self._sessions() as session, session.begin():
            domain = await session.get(SendingDomain, domain_id)
            if domain is None or domain.state != DomainState.ACTIVE:  # paused again since
                return
            messages = await repo.unsent_for_update(
                session, Message.sending_domain_id == domain_id, repo.IN_SENDING_CAMPAIGN
            )
            await self.replan(session, messages, self._clock(), "domain resumed")
        log.info("scheduler.domain.resumed", domain_id=str(domain_id), replanned=len(messages))

    async def probe_paused_domains(self) -> None:
        """A domain paused for a transient cause gets one probe message once its cool-down is over: the next
        it holds, planned from now. Its outcome resumes the domain, or starts the cool-down again."""
        now = self._clock()
        cooled = now - timedelta(seconds=self._settings.domain_cooldown_seconds)
        async with self._sessions() as session, session.begin():
            for domain in await repo.domains_to_probe(session, cooled):
                message = await repo.first_unsent(session, domain.id)
                if message is None:  # nothing to send: it waits until there is
                    continue
                await domain_health.choose_probe(on_session(session), domain.id, message.id)
                await self.replan(session, [message], now, "probe")
                log.info("scheduler.domain.probe", domain_id=str(domain.id), message_id=str(message.id))

    async def pause_campaign(self, campaign_id: uuid.UUID) -> None:
        """Commands already on their way are void (the sender refuses a paused campaign): take them back."""
        async with self._sessions() as session, session.begin():
            await message_store.release_campaign(on_session(session), campaign_id)

    async def stop_campaign(self, campaign_id: uuid.UUID) -> None:
        """The api cancels at once; this catches what was planned meanwhile (a follow-up racing the stop)."""
        async with self._sessions() as session, session.begin():
            await message_store.cancel_campaign(on_session(session), campaign_id)

    async def plan_next_step(self, message_id: uuid.UUID) -> bool:
        """The next step of a sent message's sequence, if its campaign has one and its lead may get it."""
        async with self._sessions() as session, session.begin():
            return await self._plan_next_step(session, message_id)

    async def _plan_next_step(self, session: AsyncSession, message_id: uuid.UUID) -> bool:
        """Step n + 1 after message `message_id` (step n, sent or skipped): on the same sending domain (the
        thread's, paused or not), at its first free slot at or after `delay_days` after the send (a skipped
        step: its slot). Idempotent: a second `MessageSent` finds the next step already there."""
        found = await repo.step_context(session, message_id)
        if found is None or await repo.has_followup(session, message_id):
            return False
        previous, campaign, step = found
        window = Window.from_dict(campaign.window)
        basis = previous.sent_at if previous.status == MessageStatus.SENT else previous.scheduled_at
        assert basis is not None
        # In recipient mode the same local time is the lead's; the day counted for caps stays the campaign's.
        mode, lead = campaign.window_mode, previous.lead_id
        own = (await lead_windows(session, window, mode, [lead], basis.year)).get(lead)
        due = max(self._clock(), followup_due(own or window, basis, step.delay_days))
        domain = await session.get_one(SendingDomain, previous.sending_domain_id)
        schedules, providers = await domain_schedules(
            session, [domain], window, due, self._settings.pace_rules, [lead]
        )
        try:
            slot: Reservation | None = schedules[domain.id].take(due, providers.get(lead), own)
        except NoSlotError:
            slot = None  # it fails, saying there was no slot
        planned = repo.new_message(
            campaign,
            previous.lead_id,
            domain.id,
            domain.domain,
            slot,
            not_before=due,
            parent_id=previous.id,
            step=step.position,
        )
        days = {window.local_date(slot.start): 1} if slot is not None else {}
        await message_store.plan(on_session(session), campaign.id, [planned], days)
        log.info(
            "scheduler.step.planned",
            parent_id=str(message_id),
            step=step.position,
            scheduled_at=slot.start.isoformat() if slot else None,
        )
        return True

    async def plan_owed_steps(self, limit: int = 500) -> int:
        """Next steps an edit of a running campaign added after what some of its leads were sent: planned now,
        each idempotently, `limit` per campaign and beat (the rest on the next beats)."""
        planned = 0
        async with self._sessions() as session:
            edited = await repo.edited_campaigns(session)
        for campaign_id, edited_at in edited:
            async with self._sessions() as session:
                owed = await repo.owed_steps(session, campaign_id, limit)
            planned += sum([await self.plan_next_step(message_id) for message_id in owed])
            if len(owed) < limit:
                async with self._sessions() as session, session.begin():
                    await repo.edit_handled(session, campaign_id, edited_at)
        return planned

    async def lead_left(self, lead_id: uuid.UUID, only_followups: bool = False) -> None:
        """A lead that bounced or unsubscribed is never mailed again, one that replied gets no later step:
        its pending messages are cancelled (the tracker may have done so already), which may finish the
        campaigns that were waiting only for them."""
        async with self._sessions() as session, session.begin():
            await message_store.cancel_lead(on_session(session), lead_id, only_followups)
            for campaign_id in await repo.active_campaigns_of_lead(session, lead_id):
                await message_store.complete_if_done(on_session(session), campaign_id, self._clock())

    async def message_settled(self, campaign_id: uuid.UUID) -> None:
        async with self._sessions() as session, session.begin():
            if await message_store.complete_if_done(on_session(session), campaign_id, self._clock()):
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
                await message_store.complete_if_done(db, campaign_id, now)
            await domain_health.prune(db, now)
        async with self._sessions() as session, session.begin():  # not holding up the repairs above
            pruned = await retention.prune(on_session(session), now, self._settings)
        await self.probe_paused_domains()
        await self.plan_owed_steps()
        if released or interrupted:
            log.warning("scheduler.reconcile.fixed", released=released, interrupted=sum(interrupted.values()))
        if any(pruned.values()):
            log.info("scheduler.retention.pruned", **pruned)
