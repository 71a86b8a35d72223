"""Connecting a sending domain's mailbox with OAuth2: start (the authorize URL), the provider's callback, and
disconnect."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.api.domains.repository import DomainRepository
from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import unit_of_work
from services.api.kit.envelope import Envelope
from services.api.kit.openapi import errors
from services.api.kit.schemas import DeletedOut
from services.api.oauth import service
from services.api.oauth.schemas import OAuthConnectedOut, OAuthStartIn, OAuthStartOut
from shared.clock import utcnow

router = APIRouter(tags=["domains"])
CALLBACK = "/oauth/callback"


@router.post("/domains/{domain_id}/oauth", response_model=Envelope[OAuthStartOut], responses=errors(503))
async def connect_domain_oauth(
    request: Request, principal: CurrentPrincipal, domain_id: str, body: OAuthStartIn
) -> dict[str, Any]:
    """Start connecting the domain's mailbox with OAuth2: send the person to `authorize_url`, signed in as the
    domain's `from_email`. Its SMTP and IMAP log in with the grant once the provider calls back."""
    state = request.app.state
    async with unit_of_work(request, principal, DomainRepository) as repo:
        return {
            "data": await service.start(repo, domain_id, body, state.oauth, state.runtime.settings, utcnow)
        }


@router.delete("/domains/{domain_id}/oauth", response_model=Envelope[DeletedOut])
async def disconnect_domain_oauth(
    request: Request, principal: CurrentPrincipal, domain_id: str
) -> dict[str, Any]:
    """Forget the domain's OAuth2 grant (revoked at the provider where it can be)."""
    state = request.app.state
    async with unit_of_work(request, principal, DomainRepository) as repo:
        grant = await service.disconnect(repo, domain_id)
    await service.revoke(state.oauth, grant, state.runtime.settings)
    return {"data": {"id": str(grant.id), "deleted": True}}


# The provider's redirect, reached by the person's browser without our token (the `state` proves the flow):
# the one public route beside the login, outside the OpenAPI document of the authenticated api.
@router.get(CALLBACK, response_model=Envelope[OAuthConnectedOut], include_in_schema=False)
async def oauth_callback(request: Request) -> dict[str, Any]:
    state = request.app.state
    query = {key: value[:4096] for key, value in request.query_params.items()}
    answer = await service.complete(
        state.runtime.sessions, state.oauth, state.runtime.settings, utcnow, query
    )
    return {"data": answer}
