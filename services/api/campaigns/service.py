"""Use cases of campaigns and their messages: create (the wizard), read with KPIs, list messages."""

from __future__ import annotations

import uuid
from typing import Any

from services.api.campaigns.repository import CampaignRepository, MessageRepository
from services.api.campaigns.schemas import FOLLOWUP_DAYS, CampaignIn, StepIn, StepsIn
from services.api.campaigns.wizard import check_step_templates, check_wizard
from services.api.kit.envelope import conflict
from services.api.kit.repository import parse_id
from shared import kpis, sequences
from shared.clock import utcnow
from shared.db.models import Campaign, CampaignStatus, CampaignStep, Message
from shared.events import CampaignStarted
from shared.lifecycle import FINAL
from shared.planning.window import Window
from shared.settings import Settings


async def create(repo: CampaignRepository, payload: CampaignIn, settings: Settings) -> dict[str, Any]:
    """Store the campaign with its resolved audience and, unless it is a draft, its `CampaignStarted` in the
    same transaction (outbox)."""
    wizard = await check_wizard(repo, payload, settings)
    campaign = await repo.add(
        Campaign(
            name=payload.name,
            status=CampaignStatus.DRAFT
            if payload.schedule.start_mode == "draft"
            else CampaignStatus.SCHEDULED,
            template_id=wizard.template.id,
            steps=campaign_steps(payload.sequence),
            stop_on_auto_reply=payload.stop_rules.on_auto_reply,
            stop_on_click=payload.stop_rules.on_click,
            stop_on_company_reply=payload.stop_rules.on_company_reply,
            track_opens=payload.tracking.opens,
            track_clicks=payload.tracking.clicks,
            start_at=wizard.start_at,
            window=wizard.window_spec,
            domains=[d.domain for d in wizard.domains],
            reassign_on_domain_pause=payload.reassign_on_domain_pause,
            audience_count=len(wizard.audience.lead_ids),
            audience_excluded=wizard.audience.excluded,
        )
    )
    await repo.add_audience(campaign, wizard.audience.lead_ids)
    await repo.open_counters(campaign)
    if campaign.status == CampaignStatus.SCHEDULED:
        await repo.announce(CampaignStarted(workspace_id=repo.workspace_id, campaign_id=campaign.id))
    return await detail(repo, await repo.reload(campaign))


def campaign_steps(steps: list[StepIn]) -> list[CampaignStep]:
    return [
        CampaignStep(
            position=position,
            template_id=uuid.UUID(step.template_id),
            delay_days=step.delay_days,
            attach_report=step.attach_report,
            condition=step.condition,
        )
        for position, step in enumerate(steps, 1)
    ]


async def get(repo: CampaignRepository, raw_id: str, step: int | None = None) -> dict[str, Any]:
    return await detail(repo, await repo.require(raw_id), step)


async def detail(repo: CampaignRepository, campaign: Campaign, step: int | None = None) -> dict[str, Any]:
    """The campaign with its KPIs, each step's beside them, and its timeline (or one step's)."""
    counters, days = await repo.kpis(campaign)
    if step is not None:
        days = await repo.step_days(campaign, step)
    window = Window.from_dict(campaign.window)
    found = {row["step"]: row for row in await repo.step_kpis(campaign)}
    zero = dict.fromkeys(STEP_COUNTERS, 0)
    return {
        **campaign_out(campaign),
        "audience_count": campaign.audience_count,
        "domains_used": campaign.domains[: campaign.audience_count],
        "kpis": kpis.kpis(counters, window),
        "kpis_by_step": [
            {**zero, **found.get(position, {}), "step": position}
            for position in sorted({0, *(s.position for s in campaign.steps), *found})
        ],
        "timeline": kpis.timeline(days, window.local_date(utcnow())),
    }


STEP_COUNTERS = (
    "planned", "sent", "opened", "opened_human", "replied", "clicked", "bounced", "cancelled", "skipped",
)  # fmt: skip


async def edit_steps(repo: CampaignRepository, raw_id: str, payload: StepsIn) -> dict[str, Any]:
    """New steps for a campaign that is not final. Steps some lead already has a message of stay as they
    were; the edit applies from the first position no lead reached, and the answer says so."""
    campaign = await repo.reload(await repo.require(raw_id), lock=True)
    if campaign.status in FINAL:
        raise conflict(f"the campaign is {campaign.status}: its steps can no longer change")
    await check_step_templates(repo, payload.steps)
    reached = await repo.planned_up_to(campaign)
    current = [sequence_step(step) for step in campaign.steps]
    wanted = [sequence_step(step) for step in campaign_steps(payload.steps)]
    steps = sequences.apply_edit(current, wanted, reached)
    kept = [step for step in current if step.position < sequences.editable(current, reached)]
    rows = campaign.steps
    for step in steps:
        if step.position > len(rows):
            rows.append(CampaignStep(position=step.position))
        row = rows[step.position - 1]
        row.template_id, row.delay_days = uuid.UUID(step.template_id), step.delay_days
        row.attach_report, row.condition = step.attach_report, step.condition
    del rows[len(steps) :]
    await repo.session.flush()
    campaign = await repo.reload(campaign)
    first = sequences.editable(current, reached)
    return {
        "steps": steps_out(campaign),
        "applied_from": first,
        "unchanged": [step.position for step in kept],
        "note": (
            f"steps {', '.join(str(s.position) for s in kept)} are planned for some leads already and stay as"
            f" they were; the edit applies from step {first}"
            if kept
            else "no step was planned yet: the edit applies to every step"
        ),
    }


def sequence_step(row: CampaignStep) -> sequences.Step:
    return sequences.Step(
        row.position,
        str(row.template_id),
        row.delay_days,
        row.attach_report,
        sequences.Condition(row.condition),
    )


def steps_out(campaign: Campaign) -> list[dict[str, Any]]:
    return [
        {
            "position": step.position,
            "template_id": str(step.template_id),
            "delay_days": step.delay_days,
            "attach_report": step.attach_report,
            "condition": step.condition,
        }
        for step in campaign.steps
    ]


def campaign_out(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": str(campaign.id),
        "name": campaign.name,
        "status": campaign.status,
        "template_id": str(campaign.template_id),
        "followup_enabled": bool(campaign.steps),
        "followup_days": campaign.steps[0].delay_days if campaign.steps else FOLLOWUP_DAYS,
        "followup_attach_report": bool(campaign.steps) and campaign.steps[0].attach_report,
        "steps": steps_out(campaign),
        "stop_rules": {
            "on_auto_reply": campaign.stop_on_auto_reply,
            "on_click": campaign.stop_on_click,
            "on_company_reply": campaign.stop_on_company_reply,
        },
        "start_at": campaign.start_at,
        "window": campaign.window,
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
