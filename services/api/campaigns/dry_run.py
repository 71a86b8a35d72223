"""Dry-runs: what a start now would plan, through the planner and the reservations a start uses, writing
nothing and locking nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, TypeVar

from services.api.campaigns.repository import CampaignRepository
from services.api.campaigns.schemas import CampaignIn
from services.api.campaigns.service import steps_of, steps_out
from services.api.campaigns.wizard import check_wizard
from services.api.domains.repository import DomainRepository
from services.api.kit.envelope import invalid
from shared.clock import utcnow
from shared.db.models import Campaign
from shared.planning import audience, plan_round_robin
from shared.planning.slots import NoSlotError, Reservation, unplanned_reason
from shared.planning.summary import summarize
from shared.planning.window import Window
from shared.reputation import planned_on
from shared.settings import Settings

L = TypeVar("L")
D = TypeVar("D")


@contextlib.contextmanager
def _fitting() -> Iterator[None]:
    """A plan that finds no free slot within the planner's horizon answers 422 with the reason."""
    try:
        yield
    except NoSlotError as error:
        raise invalid(
            f"the audience does not fit: {error} (the window, the domains' intervals and daily caps)"
        ) from error


def _every_lead_fits(
    planned: list[tuple[L, D, Reservation | None]], names: Mapping[D, str], earliest: datetime
) -> list[tuple[L, str, Reservation]]:
    """The plan with its domains' names, or NoSlotError when a lead got no slot (a start would fail that
    lead's message)."""
    fitting = [(lead, names[domain], slot) for lead, domain, slot in planned if slot is not None]
    if len(fitting) < len(planned):
        raise NoSlotError(unplanned_reason(earliest))
    return fitting


async def dry_run(repo: CampaignRepository, payload: CampaignIn, settings: Settings) -> dict[str, Any]:
    """What creating this campaign now would plan."""
    wizard = await check_wizard(repo, payload, settings)
    earliest = max(utcnow(), wizard.start_at or utcnow())
    leads = wizard.audience.lead_ids
    domains = planned_on(wizard.domains, payload.reassign_on_domain_pause)
    schedules, providers = await repo.schedules(domains, wizard.window, earliest, settings.pace_rules, leads)
    mode = payload.schedule.window_mode
    windows = await repo.lead_windows(wizard.window, mode, leads, earliest.year)
    names = {d.id: d.domain for d in domains}
    with _fitting():
        planned = _every_lead_fits(
            plan_round_robin(leads, [d.id for d in domains], schedules, earliest, providers, windows),
            names,
            earliest,
        )
    return {
        "audience_count": len(wizard.audience.lead_ids),
        "excluded": wizard.audience.excluded,
        **summarize(planned, wizard.window, [step.delay_days for step in payload.sequence], mode, windows),
        "steps": [
            {"position": position, **step.model_dump()} for position, step in enumerate(payload.sequence, 1)
        ],
    }


async def campaign_dry_run(repo: CampaignRepository, raw_id: str, settings: Settings) -> dict[str, Any]:
    """What a start or resume now would plan: the leads not yet sent to, re-planned from max(now, start_at)
    with the campaign's own unsent reservations left out."""
    campaign: Campaign = await repo.require(raw_id)
    steps = await steps_of(repo, campaign)
    window = Window.from_dict(campaign.window)
    earliest = max(utcnow(), campaign.start_at or utcnow())
    by_name = await repo.sibling(DomainRepository).named(campaign.domains)
    domains = [by_name[n] for n in campaign.domains]
    unsent = await repo.unsent_initial_messages(campaign)
    mode = campaign.window_mode
    if unsent or await repo.has_messages(campaign):
        loads, providers = await repo.domain_loads(domains, earliest, settings.pace_rules, excluding=unsent)
        schedules = {d.id: loads[d.id].schedule(window) for d in domains}
        windows = await repo.lead_windows(window, mode, [m.lead_id for m in unsent], earliest.year)
        with _fitting():
            planned = [
                (
                    m.lead_id,
                    m.domain_used,
                    schedules[m.sending_domain_id].take(
                        max(earliest, m.not_before), providers.get(m.lead_id), windows.get(m.lead_id)
                    ),
                )
                for m in unsent
            ]
    else:
        leads, windows = await repo.audience_of(campaign, window, earliest.year)
        domains = planned_on(domains, campaign.reassign_on_domain_pause)
        schedules, providers = await repo.schedules(domains, window, earliest, settings.pace_rules, leads)
        names = {d.id: d.domain for d in domains}
        with _fitting():
            plan = plan_round_robin(leads, [d.id for d in domains], schedules, earliest, providers, windows)
            planned = _every_lead_fits(plan, names, earliest)
    return {
        "audience_count": campaign.audience_count,
        "excluded": {**dict.fromkeys(audience.EXCLUSION_ORDER, 0), **campaign.audience_excluded},
        **summarize(planned, window, [step.delay_days for step in steps], mode, windows),
        "steps": steps_out(steps),
    }
