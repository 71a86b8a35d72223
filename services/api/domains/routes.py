"""Sending domains: create, list, read, change, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.api.domains import service
from services.api.domains.repository import DomainRepository
from services.api.domains.schemas import (
    CheckOut,
    DkimIn,
    DomainDetailOut,
    DomainIn,
    DomainOut,
    DomainPatch,
    ImapTestOut,
)
from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import unit_of_work
from services.api.kit.envelope import Envelope
from services.api.kit.openapi import errors
from services.api.kit.reads import add_reads
from services.api.kit.schemas import DeletedOut

router = APIRouter(tags=["domains"])


@router.post("/domains", status_code=201, response_model=Envelope[DomainOut], responses=errors(409))
async def create_domain(request: Request, principal: CurrentPrincipal, body: DomainIn) -> dict[str, Any]:
    settings = request.app.state.runtime.settings
    imap = (body.imap.host, body.imap.port) if body.imap is not None else None
    await service.check_hosts(
        settings, (body.smtp.host, body.smtp.port), imap
    )  # before a connection is taken
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {"data": await service.create(repo, body, settings)}


add_reads(router, "domains", "domain", DomainRepository, DomainOut, service.shown, detailed=False)


@router.get("/domains/{domain_id}", response_model=Envelope[DomainDetailOut])
async def get_domain(request: Request, principal: CurrentPrincipal, domain_id: str) -> dict[str, Any]:
    """The domain with its health, where its warm-up stands today and its slower paces towards receiving
    providers."""
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {"data": await service.detail(repo, domain_id, request.app.state.runtime.settings)}


@router.post("/domains/{domain_id}/resume", response_model=Envelope[DomainOut], responses=errors(409))
async def resume_domain(request: Request, principal: CurrentPrincipal, domain_id: str) -> dict[str, Any]:
    """A paused domain sends again: everything it holds is planned again from now. 409 when it is active."""
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {"data": await service.resume(repo, domain_id)}


@router.patch("/domains/{domain_id}", response_model=Envelope[DomainOut])
async def update_domain(
    request: Request, principal: CurrentPrincipal, domain_id: str, body: DomainPatch
) -> dict[str, Any]:
    """Planned slots keep their times; a new interval or cap applies to what is planned from now on."""
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {"data": await service.update(repo, domain_id, body, request.app.state.runtime.settings)}


@router.delete("/domains/{domain_id}", response_model=Envelope[DeletedOut], responses=errors(409))
async def delete_domain(request: Request, principal: CurrentPrincipal, domain_id: str) -> dict[str, Any]:
    """Only a domain no campaign names; otherwise deactivate it (`PATCH {"active": false}`)."""
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {"data": await service.delete(repo, domain_id)}


@router.post("/domains/{domain_id}/dkim", response_model=Envelope[DomainOut])
async def generate_dkim(
    request: Request, principal: CurrentPrincipal, domain_id: str, body: DkimIn
) -> dict[str, Any]:
    """New DKIM keys under a new selector: publish `dkim.records`; mail is signed with them from now on."""
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {
            "data": await service.generate_dkim(repo, domain_id, body, request.app.state.runtime.settings)
        }


@router.get("/domains/{domain_id}/checks", response_model=Envelope[list[CheckOut]], responses=errors(503))
async def check_domain(request: Request, principal: CurrentPrincipal, domain_id: str) -> dict[str, Any]:
    """SPF, DKIM, DMARC and MX as DNS answers them now, each with a verdict and what to fix."""
    async with unit_of_work(request, principal, DomainRepository) as repo:
        target = await service.check_target(repo, domain_id)
    return {"data": await service.checks(target, request.app.state.runtime.settings)}


@router.post(
    "/domains/{domain_id}/imap/test", response_model=Envelope[ImapTestOut], responses=errors(409, 503)
)
async def test_mailbox(request: Request, principal: CurrentPrincipal, domain_id: str) -> dict[str, Any]:
    """Log in to the domain's mailbox: its folders and whether it offers IDLE, or why it cannot be read."""
    async with unit_of_work(request, principal, DomainRepository) as repo:
        settings, tokens = request.app.state.runtime.settings, request.app.state.tokens
        endpoint = await service.mailbox_endpoint(repo, domain_id, settings, tokens)
    return {"data": await service.test_mailbox(endpoint)}
