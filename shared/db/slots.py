"""Loading what the pure planner needs of a sending domain: its reserved slots, its warm-up, the providers
that slowed it down and its slots towards them. Shared by real planning and dry-runs."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVarTuple

from sqlalchemy import ColumnElement, Select, all_, and_, any_, bindparam, func, or_, select, text
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import CampaignLead, Lead, Message, ProviderPace, RecipientProvider, SendingDomain
from shared.db.providers import recipient_domain
from shared.message_states import SLOT_HOLDING
from shared.planning import DomainSchedule, Reservation, Window
from shared.planning.pacing import Pace, PaceRules, Slowdown
from shared.planning.warmup import Warmup
from shared.planning.zones import WindowMode, recipient_windows

# Older slots can neither overlap a new one, nor share its local day for a daily cap, nor be within a
# provider's pace of it (at most a day).
LOOK_BACK = timedelta(days=2)

Columns = TypeVarTuple("Columns")


async def lock_domains(session: AsyncSession, domain_ids: Sequence[uuid.UUID]) -> None:
    """Serialise planners per sending domain for this transaction (sorted: no deadlocks).

    The exclusion constraint is the guarantee; the lock spares concurrent planners from colliding on it.
    """
    for domain_id in sorted(set(domain_ids)):
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": domain_id.int >> 65})


def warmup_of(domain: SendingDomain) -> Warmup | None:
    if domain.warmup_start_per_day is None:
        return None
    assert domain.warmup_growth_percent is not None
    assert domain.warmup_max_per_day is not None
    assert domain.warmup_start_date is not None
    return Warmup(
        domain.warmup_start_per_day,
        domain.warmup_growth_percent,
        domain.warmup_max_per_day,
        domain.warmup_start_date,
    )


def _ids(values: Collection[uuid.UUID]) -> Any:
    """Ids as one array parameter: a campaign's messages or leads can be more than the 32,767 parameters
    asyncpg takes in one statement (what `in_()` would make of them)."""
    return bindparam(None, list(values), type_=ARRAY(PgUUID(as_uuid=True)))


def provider_of_lead() -> ColumnElement[str]:
    """A lead's receiving provider: the cached one, or its address's domain while that is not resolved."""
    return func.coalesce(RecipientProvider.provider, recipient_domain(Lead.email))


@dataclass
class DomainLoad:
    """One sending domain as the planner sees it from `earliest` on."""

    domain: SendingDomain
    reservations: list[Reservation]
    slowdowns: dict[str, Slowdown] = field(default_factory=dict)
    provider_sends: dict[str, list[datetime]] = field(default_factory=dict)

    def schedule(self, window: Window) -> DomainSchedule:
        return DomainSchedule(
            window,
            self.domain.min_interval_seconds,
            self.reservations,
            self.domain.daily_cap,
            warmup_of(self.domain),
            self.slowdowns,
            self.provider_sends,
        )


async def load_domains(
    session: AsyncSession,
    domains: Sequence[SendingDomain],
    earliest: datetime,
    rules: PaceRules,
    excluding: Collection[uuid.UUID] = (),
    lock: bool = True,
) -> dict[uuid.UUID, DomainLoad]:
    """Every live reservation of these domains that could collide with a slot from `earliest` on, but those
    of the messages `excluding`; and the paces still slowed at `earliest`. `lock` is for planners that will
    write; a dry-run reads the same rows without it."""
    ids = [d.id for d in domains]
    if lock:
        await lock_domains(session, ids)
    holding = [
        Message.sending_domain_id.in_(ids),
        Message.status.in_(SLOT_HOLDING),
        Message.scheduled_at >= earliest - LOOK_BACK,
    ]
    if excluding:
        holding.append(Message.id != all_(_ids(excluding)))
    loads = {d.id: DomainLoad(d, []) for d in domains}
    query = select(Message.sending_domain_id, Message.scheduled_at, Message.slot_ends_at).where(*holding)
    for domain_id, start, end in await session.execute(query):
        loads[domain_id].reservations.append(Reservation(start, end))
    await _load_paces(session, loads, earliest, rules, holding)
    return loads


async def _load_paces(
    session: AsyncSession,
    loads: dict[uuid.UUID, DomainLoad],
    earliest: datetime,
    rules: PaceRules,
    holding: list[Any],
) -> None:
    """The slowdowns in force at `earliest` (a pace only eases as time goes on), and the domain's slots and
    last attempt towards each slowed provider."""
    rows = await session.execute(select(ProviderPace).where(ProviderPace.sending_domain_id.in_(list(loads))))
    for (pace,) in rows:
        load = loads[pace.sending_domain_id]
        slowdown = Slowdown(
            Pace(pace.interval_seconds, pace.slowed_at), load.domain.min_interval_seconds, rules
        )
        if slowdown.is_slowed(earliest):
            load.slowdowns[pace.provider] = slowdown
            load.provider_sends[pace.provider] = [pace.last_send_at] if pace.last_send_at else []
    slowed = {provider for load in loads.values() for provider in load.slowdowns}
    if not slowed:
        return
    provider = provider_of_lead()
    query = (
        select(Message.sending_domain_id, provider, Message.scheduled_at)
        .join(Lead, Lead.id == Message.lead_id)
        .outerjoin(RecipientProvider, RecipientProvider.domain == recipient_domain(Lead.email))
        .where(*holding, provider.in_(slowed))
    )
    for domain_id, name, start in await session.execute(query):
        if name in loads[domain_id].slowdowns:
            loads[domain_id].provider_sends[name].append(start)


async def lead_providers(
    session: AsyncSession, loads: Collection[DomainLoad], lead_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The providers of these leads that slowed one of these domains down (the planner needs no others)."""
    slowed = {provider for load in loads for provider in load.slowdowns}
    if not slowed or not lead_ids:
        return {}
    provider = provider_of_lead()
    rows = await session.execute(
        select(Lead.id, provider)
        .outerjoin(RecipientProvider, RecipientProvider.domain == recipient_domain(Lead.email))
        .where(Lead.id == any_(_ids(lead_ids)), provider.in_(slowed))
    )
    return {lead_id: name for lead_id, name in rows}


async def domain_schedules(
    session: AsyncSession,
    domains: Sequence[SendingDomain],
    window: Window,
    earliest: datetime,
    rules: PaceRules,
    lead_ids: Sequence[uuid.UUID] = (),
    lock: bool = True,
) -> tuple[dict[uuid.UUID, DomainSchedule], dict[uuid.UUID, str]]:
    """The domains' schedules in `window`, and the providers of `lead_ids` that keep a pace on any of them."""
    loads = await load_domains(session, domains, earliest, rules, lock=lock)
    providers = await lead_providers(session, loads.values(), lead_ids)
    return {d: load.schedule(window) for d, load in loads.items()}, providers


async def lead_windows(
    session: AsyncSession, window: Window, mode: str, lead_ids: Collection[uuid.UUID], year: int
) -> dict[uuid.UUID, Window]:
    """In `recipient` mode, the window of each of these leads that has a zone (its own, or its country's):
    the campaign window's hours there, its country's holidays (`shared.planning.zones`, plans starting in
    `year`). Leads left out take the campaign `window`, as every lead does in `campaign` mode."""
    if mode != WindowMode.RECIPIENT or not lead_ids:
        return {}
    query = select(Lead.id, Lead.timezone, Lead.country).where(
        Lead.id == any_(_ids(lead_ids)), or_(Lead.timezone.is_not(None), Lead.country.is_not(None))
    )
    return recipient_windows(window, await _core_rows(session, query), year)


async def audience_windows(
    session: AsyncSession,
    audience: Select[uuid.UUID],
    window: Window,
    mode: str,
    year: int,
    *scope: ColumnElement[bool],
) -> tuple[list[uuid.UUID], dict[uuid.UUID, Window]]:
    """The leads of `audience` (`CampaignLead.lead_id` of one campaign, as its caller scopes it, unordered) in
    the audience's order and, in `recipient` mode, their own windows as `lead_windows` gives them: each lead's
    zone and country read in the same query, not in a second pass over the leads (`scope`: conditions on
    them, a workspace's).

    One row of arrays, not a row per lead: an audience is tens of thousands of leads, and a row object each
    is most of the time and of the garbage a read of them makes."""
    places = mode == WindowMode.RECIPIENT
    rows = audience.add_columns(CampaignLead.position)
    if places:
        lead = and_(Lead.id == CampaignLead.lead_id, *scope)
        rows = rows.add_columns(Lead.timezone, Lead.country).join(Lead, lead)
    found = rows.subquery()
    wanted = [found.c.lead_id, found.c.timezone, found.c.country] if places else [found.c.lead_id]
    query = select(*(func.array_agg(aggregate_order_by(column, found.c.position)) for column in wanted))
    arrays = (await (await session.connection()).execute(query)).one()
    leads: list[uuid.UUID] = list(arrays[0] or ())  # no leads: NULL
    if not places or not leads:
        return leads, {}
    return leads, recipient_windows(window, zip(leads, arrays[1], arrays[2], strict=True), year)


async def _core_rows(session: AsyncSession, query: Select[*Columns]) -> Sequence[tuple[*Columns]]:
    """The rows of a query of columns as Core reads them, without the ORM's result processing: about half the
    time and two thirds of the objects over thousands of leads."""
    return (await (await session.connection()).execute(query)).all()
