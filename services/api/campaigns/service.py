"""Use cases of campaigns and their messages: create (the wizard), read with KPIs, list messages."""

from __future__ import annotations

import uuid
from typing import Any

from services.api.campaigns.repository import STEP_COUNTERS, CampaignRepository, MessageRepository
from services.api.campaigns.schemas import FOLLOWUP_DAYS, CampaignIn, StepIn, StepsIn
from services.api.campaigns.wizard import check_step_templates, check_wizard
from services.api.kit.envelope import conflict
from services.api.kit.repository import parse_id
from shared import kpis, sequences
from shared.clock import utcnow
from shared.db.models import Campaign, CampaignStatus, Message
from shared.events import CampaignStarted
from shared.lifecycle import FINAL
from shared.planning.window import Window
from shared.settings import Settings


async def create(repo: CampaignRepository, payload: CampaignIn, settings: Settings) -> dict[str, Any]:
    """Store the campaign with its resolved audience and steps and, unless it is a draft, its
    `CampaignStarted` in the same transaction (outbox)."""
    wizard = await check_wizard(repo, payload, settings)
    campaign = await repo.add(
        Campaign(
            name=payload.name,
            status=CampaignStatus.DRAFT
            if payload.schedule.start_mode == "draft"
            else CampaignStatus.SCHEDULED,
            template_id=wizard.template.id,
            stop_on_auto_reply=payload.stop_rules.on_auto_reply,
            stop_on_click=payload.stop_rules.on_click,
            stop_on_company_reply=payload.stop_rules.on_company_reply,
            track_opens=payload.tracking.opens,
            track_clicks=payload.tracking.clicks,
            start_at=wizard.start_at,
            window=wizard.window_spec,
            window_mode=payload.schedule.window_mode,
            domains=[d.domain for d in wizard.domains],
            reassign_on_domain_pause=payload.reassign_on_domain_pause,
            audience_count=len(wizard.audience.lead_ids),
            audience_excluded=wizard.audience.excluded,
        )
    )
    await repo.replace_steps(campaign, sequence(payload.sequence), 1)
    await repo.add_audience(campaign, wizard.audience.lead_ids)
    await repo.open_counters(campaign)
    if campaign.status == CampaignStatus.SCHEDULED:
        await repo.announce(CampaignStarted(workspace_id=repo.workspace_id, campaign_id=campaign.id))
    return await detail(repo, await repo.reload(campaign))


def sequence(steps: list[StepIn]) -> list[sequences.Step]:
    """The payload's steps, numbered from 1."""
    return [
        sequences.Step(position, step.template_id, step.delay_days, step.attach_report, step.condition)
        for position, step in enumerate(steps, 1)
    ]


async def steps_of(repo: CampaignRepository, campaign: Campaign) -> list[sequences.Step]:
    return (await stored_steps(repo, [campaign]))[campaign.id]


async def stored_steps(
    repo: CampaignRepository, campaigns: list[Campaign]
) -> dict[uuid.UUID, list[sequences.Step]]:
    return {
        campaign_id: [
            sequences.Step(
                row.position,
                str(row.template_id),
                row.delay_days,
                row.attach_report,
                sequences.Condition(row.condition),
            )
            for row in rows
        ]
        for campaign_id, rows in (await repo.steps_of(campaigns)).items()
    }


async def get(repo: CampaignRepository, raw_id: str, step: int | None = None) -> dict[str, Any]:
    return await detail(repo, await repo.require(raw_id), step)


async def detail(repo: CampaignRepository, campaign: Campaign, step: int | None = None) -> dict[str, Any]:
    """The campaign with its KPIs, each step's beside them, and its timeline (or one step's)."""
    counters, campaign_days = await repo.kpis(campaign)
    days = campaign_days if step is None else await repo.step_days(campaign, step)
    window = Window.from_dict(campaign.window)
    steps = await steps_of(repo, campaign)
    found = {row["step"]: row for row in await repo.step_kpis(campaign)}
    zero = dict.fromkeys(STEP_COUNTERS, 0)
    return {
        **campaign_out(campaign, steps),
        "audience_count": campaign.audience_count,
        "domains_used": campaign.domains[: campaign.audience_count],
        "kpis": kpis.kpis(counters, window, campaign.window_mode, campaign_days),
        "kpis_by_step": [
            {**zero, **found.get(position, {}), "step": position}
            for position in sorted({0, *(s.position for s in steps), *found})
        ],
        "timeline": kpis.timeline(days, window.local_date(utcnow())),
    }


async def edit_steps(repo: CampaignRepository, raw_id: str, payload: StepsIn) -> dict[str, Any]:
    """New steps for a campaign that is not final. Steps some lead already has a message of stay as they
    were; the edit applies from the first position no lead reached, and the answer says so."""
    campaign = await repo.reload(await repo.require(raw_id), lock=True)
    if campaign.status in FINAL:
        raise conflict(f"the campaign is {campaign.status}: its steps can no longer change")
    await check_step_templates(repo, payload.steps)
    reached = await repo.planned_up_to(campaign)
    current = await steps_of(repo, campaign)
    first = sequences.editable(current, reached)
    steps = sequences.apply_edit(current, sequence(payload.steps), reached)
    await repo.replace_steps(campaign, steps, first)
    await repo.change(campaign, {"steps_edited_at": utcnow()})
    kept = [str(step.position) for step in current if step.position < first]
    return {
        "steps": steps_out(steps),
        "applied_from": first,
        "unchanged": [int(position) for position in kept],
        "note": (
            f"steps {', '.join(kept)} are planned for some leads already and stay as they were; the edit"
            f" applies from step {first}"
            if kept
            else "no step was planned yet: the edit applies to every step"
        ),
    }


def steps_out(steps: list[sequences.Step]) -> list[dict[str, Any]]:
    return [
        {
            "position": step.position,
            "template_id": step.template_id,
            "delay_days": step.delay_days,
            "attach_report": step.attach_report,
            "condition": step.condition,
        }
        for step in steps
    ]


async def campaigns_out(repo: CampaignRepository, campaigns: list[Campaign]) -> list[dict[str, Any]]:
    """A page of campaigns, their steps read together."""
    steps = await stored_steps(repo, campaigns)
    return [campaign_out(campaign, steps[campaign.id]) for campaign in campaigns]


def campaign_out(campaign: Campaign, steps: list[sequences.Step]) -> dict[str, Any]:
    return {
        "id": str(campaign.id),
        "name": campaign.name,
        "status": campaign.status,
        "template_id": str(campaign.template_id),
        "followup_enabled": bool(steps),
        "followup_days": steps[0].delay_days if steps else FOLLOWUP_DAYS,
        "followup_attach_report": bool(steps) and steps[0].attach_report,
        "steps": steps_out(steps),
        "stop_rules": {
            "on_auto_reply": campaign.stop_on_auto_reply,
            "on_click": campaign.stop_on_click,
            "on_company_reply": campaign.stop_on_company_reply,
        },
        "start_at": campaign.start_at,
        "window": campaign.window,
        "window_mode": campaign.window_mode,
        "domains": campaign.domains,
        "reassign_on_domain_pause": campaign.reassign_on_domain_pause,
        "created_at": campaign.created_at,
        "updated_at": campaign.updated_at,
    }


async def message_page(
    repo: MessageRepository, page: int, page_size: int, ids: dict[str, str | None], filters: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    """A page of messages, newest slot first; `ids` (campaign_id, lead_id) and `filters` match exactly, and an
    id that is not one matches nothing."""
    parsed = {name: parse_id(raw) for name, raw in ids.items() if raw is not None}
    if any(value is None for value in parsed.values()):
        return [], 0
    rows, total = await repo.page_with_emails(page, page_size, {**parsed, **filters})
    return [message_out(message, email) for message, email in rows], total


def message_out(message: Message, lead_email: str) -> dict[str, Any]:
    ids = ("id", "campaign_id", "lead_id", "parent_message_id")
    fields = (
        "domain_used",
        "scheduled_at",
        "sent_at",
        "status",
        "is_followup",
        "step",
        "retry_count",
        "last_error",
        "opened_at",
        "replied_at",
        "clicked_at",
    )
    return {
        **{name: str(value) if (value := getattr(message, name)) is not None else None for name in ids},
        **{name: getattr(message, name) for name in fields},
        "lead_email": lead_email,
    }
