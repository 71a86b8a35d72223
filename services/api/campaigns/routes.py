"""Campaigns: the wizard, dry-runs, list and detail, the lifecycle, and their messages (list, resend)."""

from __future__ import annotations

from typing import Annotated, Any, get_args

from fastapi import APIRouter, Query, Request

from services.api.campaigns import dry_run as dry_runs
from services.api.campaigns import lifecycle, service
from services.api.campaigns.repository import CampaignRepository, MessageRepository
from services.api.campaigns.schemas import (
    CampaignDetailOut,
    CampaignIn,
    CampaignOut,
    DryRunOut,
    MessageOut,
    StepsEditOut,
    StepsIn,
)
from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import PageNumber, PageSize, Search, page_of, page_out, unit_of_work
from services.api.kit.envelope import Envelope, Page
from services.api.kit.openapi import errors
from services.api.kit.schemas import ID_MAX, Moment
from shared.db.models import Campaign, CampaignStatus, MessageStatus
from shared.lifecycle import Requested
from shared.sequences import MAX_STEPS

router = APIRouter(tags=["campaigns"])


@router.post("/campaigns", status_code=201, response_model=Envelope[CampaignDetailOut])
async def create_campaign(request: Request, principal: CurrentPrincipal, body: CampaignIn) -> dict[str, Any]:
    async with unit_of_work(request, principal, CampaignRepository) as repo:
        return {"data": await service.create(repo, body, request.app.state.runtime.settings)}


@router.post("/campaigns/dry-run", response_model=Envelope[DryRunOut])
async def dry_run(request: Request, principal: CurrentPrincipal, body: CampaignIn) -> dict[str, Any]:
    """Plan the wizard payload as a start now would, writing nothing."""
    async with unit_of_work(request, principal, CampaignRepository) as repo:
        return {"data": await dry_runs.dry_run(repo, body, request.app.state.runtime.settings)}


@router.post("/campaigns/{campaign_id}/dry-run", response_model=Envelope[DryRunOut])
async def campaign_dry_run(request: Request, principal: CurrentPrincipal, campaign_id: str) -> dict[str, Any]:
    """What a start or resume now would plan, writing nothing."""
    async with unit_of_work(request, principal, CampaignRepository) as repo:
        return {
            "data": await dry_runs.campaign_dry_run(repo, campaign_id, request.app.state.runtime.settings)
        }


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
    return await page_of(
        request, principal, CampaignRepository, service.campaigns_out, page, page_size, search, *where
    )


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
    filters = {"status": status, "domain_used": domain, "is_followup": is_followup}
    async with unit_of_work(request, principal, MessageRepository) as repo:
        items, total = await service.message_page(repo, page, page_size, ids, filters)
    return page_out(items, total, page, page_size)


@router.post(
    "/campaigns/messages/{message_id}/resend", response_model=Envelope[MessageOut], responses=errors(409)
)
async def resend_message(request: Request, principal: CurrentPrincipal, message_id: str) -> dict[str, Any]:
    async with unit_of_work(request, principal, MessageRepository) as repo:
        return {"data": await lifecycle.resend(repo, message_id)}


@router.get("/campaigns/{campaign_id}", response_model=Envelope[CampaignDetailOut])
async def get_campaign(
    request: Request,
    principal: CurrentPrincipal,
    campaign_id: str,
    step: Annotated[int | None, Query(ge=0, le=MAX_STEPS)] = None,
) -> dict[str, Any]:
    """`step`: the timeline of that step alone (0: the first e-mail); the KPIs stay the campaign's."""
    async with unit_of_work(request, principal, CampaignRepository) as repo:
        return {"data": await service.get(repo, campaign_id, step)}


@router.put("/campaigns/{campaign_id}/steps", response_model=Envelope[StepsEditOut], responses=errors(409))
async def edit_campaign_steps(
    request: Request, principal: CurrentPrincipal, campaign_id: str, body: StepsIn
) -> dict[str, Any]:
    """The sequence after the first e-mail. On a campaign that already planned some steps, those stay as
    they were and the edit applies to the steps after them (the answer says from which)."""
    async with unit_of_work(request, principal, CampaignRepository) as repo:
        return {"data": await service.edit_steps(repo, campaign_id, body)}


def add_lifecycle_route(action: Requested) -> None:
    @router.post(
        f"/campaigns/{{campaign_id}}/{action}",
        response_model=Envelope[CampaignOut],
        responses=errors(409),
        name=f"{action}_campaign",
    )
    async def change(request: Request, principal: CurrentPrincipal, campaign_id: str) -> dict[str, Any]:
        async with unit_of_work(request, principal, CampaignRepository) as repo:
            return {"data": await lifecycle.change(repo, campaign_id, action)}


for _action in get_args(Requested):
    add_lifecycle_route(_action)
