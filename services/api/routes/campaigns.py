from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.api import service
from services.api.auth import CurrentPrincipal
from services.api.envelope import Envelope, Page
from services.api.routes.deps import PageNumber, PageSize, unit_of_work
from services.api.schemas import CampaignDetailOut, CampaignIn, CampaignOut
from shared.db.models import Campaign

router = APIRouter(tags=["campaigns"])


@router.post("/campaigns", status_code=201, response_model=Envelope[CampaignDetailOut])
async def create_campaign(request: Request, principal: CurrentPrincipal, body: CampaignIn) -> dict[str, Any]:
    async with unit_of_work(request, principal) as repo:
        campaign = await service.create_campaign(repo, body)
        await repo.session.flush()
        await repo.session.refresh(campaign)
        return {"data": await service.campaign_detail(repo, campaign)}


@router.get("/campaigns", response_model=Envelope[Page[CampaignOut]])
async def list_campaigns(
    request: Request, principal: CurrentPrincipal, page: PageNumber = 1, page_size: PageSize = 20
) -> dict[str, Any]:
    async with unit_of_work(request, principal) as repo:
        rows, total = await repo.page(Campaign, page, page_size)
        items = [service.campaign_out(r) for r in rows]
    return {"data": {"items": items, "total": total, "page": page, "page_size": page_size}}


@router.get("/campaigns/{campaign_id}", response_model=Envelope[CampaignDetailOut])
async def get_campaign(request: Request, principal: CurrentPrincipal, campaign_id: str) -> dict[str, Any]:
    async with unit_of_work(request, principal) as repo:
        campaign = service.not_found_unless(await repo.get(Campaign, campaign_id), "campaign")
        return {"data": await service.campaign_detail(repo, campaign)}
