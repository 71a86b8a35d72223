"""Use cases of campaigns and their messages: create (the wizard), read with KPIs, list messages."""

from __future__ import annotations

from typing import Any

from services.api.campaigns.repository import CampaignRepository, MessageRepository
from services.api.campaigns.schemas import CampaignIn
from services.api.campaigns.wizard import check_wizard
from services.api.kit.repository import parse_id
from shared import kpis
from shared.clock import utcnow
from shared.db.models import Campaign, CampaignStatus, Message
from shared.events import CampaignStarted
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
            followup_enabled=payload.followup.enabled,
            followup_days=payload.followup.days,
            followup_attach_report=payload.followup.attach_report,
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


async def get(repo: CampaignRepository, raw_id: str) -> dict[str, Any]:
    return await detail(repo, await repo.require(raw_id))


async def detail(repo: CampaignRepository, campaign: Campaign) -> dict[str, Any]:
    counters, days = await repo.kpis(campaign)
    window = Window.from_dict(campaign.window)
    return {
        **campaign_out(campaign),
        "audience_count": campaign.audience_count,
        "domains_used": campaign.domains[: campaign.audience_count],
        "kpis": kpis.kpis(counters, window),
        "timeline": kpis.timeline(days, window.local_date(utcnow())),
    }


def campaign_out(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": str(campaign.id),
        "name": campaign.name,
        "status": campaign.status,
        "template_id": str(campaign.template_id),
        "followup_enabled": campaign.followup_enabled,
        "followup_days": campaign.followup_days,
        "followup_attach_report": campaign.followup_attach_report,
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
