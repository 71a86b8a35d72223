from __future__ import annotations

from typing import Annotated, Any, get_args

from fastapi import APIRouter, Query, Request

from services.api import lifecycle, repository, service
from services.api.auth import CurrentPrincipal
from services.api.envelope import Envelope, Page
from services.api.routes.deps import PageNumber, PageSize, Search, page_of, unit_of_work
from services.api.schemas import (
    ID_MAX,
    CampaignDetailOut,
    CampaignIn,
    CampaignOut,
    DryRunOut,
    MessageOut,
    Moment,
)
from shared.db.models import Campaign, CampaignStatus, Message, MessageStatus
from shared.lifecycle import Requested

router = APIRouter(tags=["campaigns"])


@router.post("/campaigns", status_code=201, response_model=Envelope[CampaignDetailOut])
async def create_campaign(request: Request, principal: CurrentPrincipal, body: CampaignIn) -> dict[str, Any]:
    async with unit_of_work(request, principal) as repo:
        campaign = await service.create_campaign(repo, body, request.app.state.runtime.settings)
        await repo.session.flush()
        await repo.session.refresh(campaign)
        return {"data": await service.campaign_detail(repo, campaign)}


@router.post("/campaigns/dry-run", response_model=Envelope[DryRunOut])
async def dry_run(request: Request, principal: CurrentPrincipal, body: CampaignIn) -> dict[str, Any]:
    """Plan the wizard payload as a start now would, writing nothing."""
    async with unit_of_work(request, principal) as repo:
        return {"data": await service.dry_run(repo, body, request.app.state.runtime.settings)}


@router.post("/campaigns/{campaign_id}/dry-run", response_model=Envelope[DryRunOut])
async def campaign_dry_run(request: Request, principal: CurrentPrincipal, campaign_id: str) -> dict[str, Any]:
    """What a start or resume now would plan, writing nothing."""
    async with unit_of_work(request, principal) as repo:
        campaign = service.not_found_unless(await repo.get(Campaign, campaign_id), "campaign")
        return {"data": await service.campaign_dry_run(repo, campaign)}


@router.get("/campaigns", response_model=Envelope[Page[CampaignOut]])
async def list_campaigns(
    request: Request,
    principal: CurrentPrincipal,
    page: PageNumber = 1,
    page_size: PageSize = 20,
    status: CampaignStatus | None = None,
    search: Search = None,
    created_from: Moment | None = None,
    created_to: Moment | None = None,
) -> dict[str, Any]:
    """Newest first; `search` matches the name, `created_from` / `created_to` bound the creation time."""
    where = []
    if status is not None:
        where.append(Campaign.status == status)
    if created_from is not None:
        where.append(Campaign.created_at >= created_from)
    if created_to is not None:
        where.append(Campaign.created_at <= created_to)
    return await page_of(request, principal, Campaign, service.campaign_out, page, page_size, search, *where)


@router.get("/campaigns/messages", response_model=Envelope[Page[MessageOut]])
async def list_messages(
    request: Request,
    principal: CurrentPrincipal,
    page: PageNumber = 1,
    page_size: PageSize = 20,
    campaign_id: Annotated[str | None, Query(max_length=ID_MAX)] = None,
    status: Annotated[MessageStatus | None, Query()] = None,
    domain: Annotated[str | None, Query(max_length=253, pattern=r"^[A-Za-z0-9.-]+$")] = None,
    lead_id: Annotated[str | None, Query(max_length=ID_MAX)] = None,
    is_followup: bool | None = None,
) -> dict[str, Any]:
    ids = {"campaign_id": campaign_id, "lead_id": lead_id}
    parsed = {name: repository.parse_id(raw) for name, raw in ids.items() if raw is not None}
    async with unit_of_work(request, principal) as repo:
        if any(value is None for value in parsed.values()):  # an unknown id matches nothing
            items: list[dict[str, Any]] = []
            total = 0
        else:
            filters = {**parsed, "status": status, "domain_used": domain, "is_followup": is_followup}
            items, total = await repository.message_page(repo, page, page_size, filters)
    return {"data": {"items": items, "total": total, "page": page, "page_size": page_size}}


@router.post("/campaigns/messages/{message_id}/resend", response_model=Envelope[MessageOut])
async def resend_message(request: Request, principal: CurrentPrincipal, message_id: str) -> dict[str, Any]:
    async with unit_of_work(request, principal) as repo:
        message = service.not_found_unless(await repo.get(Message, message_id), "message")
        message = await lifecycle.resend(repo, message)
        email = await repo.lead_email(message.lead_id)
        return {"data": repository.message_out(message, email)}


@router.get("/campaigns/{campaign_id}", response_model=Envelope[CampaignDetailOut])
async def get_campaign(request: Request, principal: CurrentPrincipal, campaign_id: str) -> dict[str, Any]:
    async with unit_of_work(request, principal) as repo:
        campaign = service.not_found_unless(await repo.get(Campaign, campaign_id), "campaign")
        return {"data": await service.campaign_detail(repo, campaign)}


def add_lifecycle_route(action: Requested) -> None:
    @router.post(
        f"/campaigns/{{campaign_id}}/{action}",
        response_model=Envelope[CampaignOut],
        name=f"{action}_campaign",
    )
    async def change(request: Request, principal: CurrentPrincipal, campaign_id: str) -> dict[str, Any]:
        async with unit_of_work(request, principal) as repo:
            campaign = service.not_found_unless(await repo.get(Campaign, campaign_id), "campaign")
            campaign = await lifecycle.change(repo, campaign, action)
            await repo.session.refresh(campaign)
            return {"data": service.campaign_out(campaign)}


for _action in get_args(Requested):
    add_lifecycle_route(_action)
