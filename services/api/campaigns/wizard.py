"""The campaign wizard's rules: what a payload must meet before a campaign is stored or dry-run, checked
against the workspace, with its audience resolved. 422 naming the field otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from services.api.campaigns.repository import CampaignRepository
from services.api.campaigns.schemas import CampaignIn, StepIn, WindowIn
from services.api.domains.repository import DomainRepository
from services.api.kit.envelope import invalid
from services.api.kit.repository import parse_id
from services.api.leads.repository import LeadRepository
from services.api.suppressions.repository import SuppressionRepository
from services.api.templates.repository import TemplateRepository
from shared.clock import utcnow
from shared.db.models import SendingDomain, Template
from shared.planning import audience
from shared.planning.window import Window
from shared.settings import Settings

PAST_TOLERANCE = timedelta(seconds=60)


def window_dict(payload: CampaignIn, settings: Settings) -> dict[str, Any]:
    """The campaign window: what the wizard set, the configured defaults (MAILDASH_WINDOW_*) for the rest."""
    given = payload.schedule.window
    defaults = {
        "timezone": settings.window_timezone,
        "days": settings.window_days,
        "start": settings.window_start,
        "end": settings.window_end,
        "holidays": settings.window_holidays,
    }
    try:
        merged = WindowIn(**{**defaults, **given.model_dump(include=given.model_fields_set)})
    except ValidationError as error:
        raise invalid(error.errors()[0]["msg"], ["body", "schedule", "window"]) from error
    return merged.model_dump()


@dataclass(frozen=True)
class Wizard:
    """A wizard payload checked against the workspace, with its audience resolved."""

    template: Template
    domains: list[SendingDomain]
    audience: audience.Audience
    window_spec: dict[str, Any]  # as stored on the campaign
    start_at: datetime | None

    @property
    def window(self) -> Window:
        return Window.from_dict(self.window_spec)


async def check_wizard(repo: CampaignRepository, payload: CampaignIn, settings: Settings) -> Wizard:
    """Every rule a campaign must meet before it is stored (or dry-run); 422 naming the field otherwise."""
    now = utcnow()
    schedule = payload.schedule
    if schedule.start_mode == "at" and schedule.start_at and schedule.start_at < now - PAST_TOLERANCE:
        raise invalid("start_at is in the past", ["body", "schedule", "start_at"])
    # Whatever the start mode, a campaign starts at max(now, start_at): keep that within the horizon.
    horizon = settings.start_horizon_days
    if schedule.start_at and schedule.start_at > now + timedelta(days=horizon):
        raise invalid(
            f"start_at is more than {horizon} days ahead (MAILDASH_START_HORIZON_DAYS)",
            ["body", "schedule", "start_at"],
        )
    template = await repo.sibling(TemplateRepository).get(payload.template_id)
    if template is None:
        raise invalid("template not found in this workspace", ["body", "template_id"])
    names = [d.lower() for d in payload.domains]
    if len(set(names)) != len(names):
        raise invalid("domains are listed twice", ["body", "domains"])
    known = await repo.sibling(DomainRepository).named(names)
    unusable = [n for n in names if n not in known or not known[n].active]
    if unusable:
        raise invalid(
            f"not active sending domains of this workspace: {', '.join(unusable)}", ["body", "domains"]
        )
    await check_step_templates(repo, payload.sequence)
    resolved = await _resolve_audience(repo, payload, now)
    window = window_dict(payload, settings)
    return Wizard(template, [known[n] for n in names], resolved, window, schedule.start_at)


async def check_step_templates(repo: CampaignRepository, steps: list[StepIn]) -> None:
    """Every step's template is one of the workspace's; 422 naming the step otherwise."""
    templates = repo.sibling(TemplateRepository)
    for index, step in enumerate(steps):
        if await templates.get(step.template_id) is None:
            raise invalid("template not found in this workspace", ["body", "steps", index, "template_id"])


async def _resolve_audience(
    repo: CampaignRepository, payload: CampaignIn, now: datetime
) -> audience.Audience:
    spec = payload.audience
    leads = repo.sibling(LeadRepository)
    if spec.mode == "static":
        ids = [parse_id(raw) for raw in spec.lead_ids]
        found = await leads.candidates_by_ids([i for i in ids if i is not None])
        missing = [raw for raw, i in zip(spec.lead_ids, ids, strict=True) if i is None or i not in found]
        if missing:
            raise invalid(f"unknown lead ids: {', '.join(missing[:20])}", ["body", "audience", "lead_ids"])
        candidates = [found[i] for i in dict.fromkeys(ids) if i is not None]
    else:
        if not spec.tags:
            raise invalid("audience mode 'tags' needs at least one tag", ["body", "audience", "tags"])
        candidates = await leads.candidates_by_tags(spec.tags)
    emails, domains = await repo.sibling(SuppressionRepository).lists()
    rules = audience.AudienceRules(
        exclude_suppressed=spec.exclude_suppressed,
        recent_since=now - timedelta(days=spec.exclude_recent_days) if spec.exclude_recent_days else None,
        one_per_domain=spec.one_per_domain,
    )
    return audience.resolve(candidates, rules, emails, domains)
