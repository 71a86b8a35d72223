"""Templates: create, list, read, change, delete, and preview for a lead."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import unit_of_work
from services.api.kit.envelope import Envelope
from services.api.kit.openapi import errors
from services.api.kit.reads import add_reads, each, row_out
from services.api.kit.schemas import DeletedOut
from services.api.templates import service
from services.api.templates.repository import TemplateRepository
from services.api.templates.schemas import PreviewIn, PreviewOut, TemplateIn, TemplateOut, TemplatePatch

router = APIRouter(tags=["templates"])


@router.post("/templates", status_code=201, response_model=Envelope[TemplateOut], responses=errors(503))
async def create_template(request: Request, principal: CurrentPrincipal, body: TemplateIn) -> dict[str, Any]:
    await service.check_sources(request.app.state.templates, body)
    async with unit_of_work(request, principal, TemplateRepository) as repo:
        return {"data": await service.create(repo, body)}


add_reads(router, "templates", "template", TemplateRepository, TemplateOut, each(row_out))


@router.patch("/templates/{template_id}", response_model=Envelope[TemplateOut], responses=errors(503))
async def update_template(
    request: Request, principal: CurrentPrincipal, template_id: str, body: TemplatePatch
) -> dict[str, Any]:
    """Takes effect for every message rendered from now on, also in running campaigns."""
    await service.check_sources(request.app.state.templates, body)
    async with unit_of_work(request, principal, TemplateRepository) as repo:
        return {"data": await service.update(repo, template_id, body)}


@router.delete("/templates/{template_id}", response_model=Envelope[DeletedOut], responses=errors(409))
async def delete_template(request: Request, principal: CurrentPrincipal, template_id: str) -> dict[str, Any]:
    async with unit_of_work(request, principal, TemplateRepository) as repo:
        return {"data": await service.delete(repo, template_id)}


@router.post("/templates/{template_id}/preview", response_model=Envelope[PreviewOut], responses=errors(503))
async def preview_template(
    request: Request, principal: CurrentPrincipal, template_id: str, body: PreviewIn
) -> dict[str, Any]:
    """The subject and bodies as `lead_id` would receive them (tracking links shown as they would be sent,
    for a message id of zeros). A template that cannot render for this lead answers 422 with the reason."""
    async with unit_of_work(request, principal, TemplateRepository) as repo:
        template, lead = await service.preview_parts(repo, template_id, body)
    state = request.app.state
    return {
        "data": await service.preview(state.templates, state.runtime.settings, template, lead, body.followup)
    }
