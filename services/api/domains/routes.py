"""Sending domains: create, list, read, change, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.api.domains import service
from services.api.domains.repository import DomainRepository
from services.api.domains.schemas import DomainIn, DomainOut, DomainPatch
from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import unit_of_work
from services.api.kit.envelope import Envelope
from services.api.kit.reads import add_reads
from services.api.kit.schemas import DeletedOut

router = APIRouter()


@router.post("/domains", status_code=201, response_model=Envelope[DomainOut], tags=["domains"])
async def create_domain(request: Request, principal: CurrentPrincipal, body: DomainIn) -> dict[str, Any]:
    settings = request.app.state.runtime.settings
    await service.check_smtp_host(settings, body.smtp.host, body.smtp.port)  # before a connection is taken
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {"data": await service.create(repo, body, settings)}


add_reads(router, "domains", DomainRepository, DomainOut, service.domain_out)


@router.patch("/domains/{domain_id}", response_model=Envelope[DomainOut], tags=["domains"])
async def update_domain(
    request: Request, principal: CurrentPrincipal, domain_id: str, body: DomainPatch
) -> dict[str, Any]:
    """Planned slots keep their times; a new interval or cap applies to what is planned from now on."""
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {"data": await service.update(repo, domain_id, body, request.app.state.runtime.settings)}


@router.delete("/domains/{domain_id}", response_model=Envelope[DeletedOut], tags=["domains"])
async def delete_domain(request: Request, principal: CurrentPrincipal, domain_id: str) -> dict[str, Any]:
    """Only a domain no campaign names; otherwise deactivate it (`PATCH {"active": false}`)."""
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {"data": await service.delete(repo, domain_id)}
