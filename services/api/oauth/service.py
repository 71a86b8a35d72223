"""Connecting a sending domain's mailbox with OAuth2 (issue 17): the authorization-code flow with PKCE.

`start` answers the provider's authorize URL and keeps the flow (its `state` hashed, its PKCE verifier
encrypted); the provider sends the person back to `complete` with a code, which is exchanged for the grant.
The connected address must be the domain's `from_email`, or the grant is revoked at once and the answer says
why. The refresh token is stored encrypted and never answered. A domain paused because its grant was refused
(`needs_reauth`) sends again once connected again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.domains.repository import DomainRepository
from services.api.kit.envelope import ApiError, invalid, not_found
from services.api.oauth.repository import OAuthAccountRepository, OAuthFlowRepository, take_flow
from services.api.oauth.schemas import OAuthStartIn
from shared import crypto, oauth
from shared.clock import Clock
from shared.db.models import OAuthAccount, OAuthFlow, SendingDomain
from shared.oauth import AccountState, Pkce, Provider, ProviderError, ProviderName, Tokens
from shared.oauth_client import GrantRefused, OAuthClient
from shared.reputation import Cause, DomainState
from shared.settings import Settings

log = structlog.get_logger()


def _unavailable(error: Exception) -> ApiError:
    return ApiError(503, "unavailable", f"the OAuth2 provider could not be reached ({type(error).__name__})")


async def _provider(client: OAuthClient, name: str, at: list[str | int]) -> Provider:
    try:
        return await client.provider(ProviderName(name))
    except ProviderError as error:
        raise invalid(str(error), at) from error
    except httpx.HTTPError as error:
        raise _unavailable(error) from error


async def start(
    repo: DomainRepository,
    raw_id: str,
    body: OAuthStartIn,
    client: OAuthClient,
    settings: Settings,
    clock: Clock,
) -> dict[str, Any]:
    domain = await repo.require(raw_id)
    provider = await _provider(client, body.provider, ["body", "provider"])
    flows, now = repo.sibling(OAuthFlowRepository), clock()
    await flows.forget_expired(now)
    pkce, state = Pkce.new(), oauth.new_state()
    expires_at = now + timedelta(seconds=settings.oauth_flow_seconds)
    await flows.add(
        OAuthFlow(
            sending_domain_id=domain.id,
            provider=provider.name.value,
            state_hash=oauth.state_hash(state),
            verifier_encrypted=crypto.encrypt(settings.encryption_key, pkce.verifier),
            expires_at=expires_at,
        )
    )
    url = oauth.authorize_url(provider, settings.oauth_redirect_url, state, pkce, domain.from_email)
    return {"provider": provider.name.value, "authorize_url": url, "expires_at": expires_at}


async def complete(
    sessions: async_sessionmaker[AsyncSession],
    client: OAuthClient,
    settings: Settings,
    clock: Clock,
    query: dict[str, str],
) -> dict[str, Any]:
    """The provider's redirect: `code` and `state`, or `error`. The state works once."""
    state = query.get("state", "")
    if not state:
        raise invalid("the callback names no state", ["query", "state"])
    async with sessions() as session, session.begin():
        flow = await take_flow(session, oauth.state_hash(state))
    if flow is None or flow.expires_at <= clock():
        raise invalid("unknown or expired OAuth2 connection: start it again", ["query", "state"])
    if denied := query.get("error"):
        described = query.get("error_description", "")[:200]
        raise invalid(
            f"the provider did not grant access: {denied[:100]} {described}".strip(), ["query", "error"]
        )
    if not (code := query.get("code", "")):
        raise invalid("the callback has no code", ["query", "code"])
    provider = await _provider(client, flow.provider, ["query", "state"])
    verifier = crypto.decrypt(settings.encryption_key, flow.verifier_encrypted)
    try:
        tokens = await client.exchange(provider, code, verifier, clock())
        email = await client.email_of(provider, tokens)
    except (GrantRefused, ProviderError) as error:
        raise invalid(f"the provider refused the code: {error}", ["query", "code"]) from error
    except httpx.HTTPError as error:
        raise _unavailable(error) from error
    async with sessions() as session, session.begin():
        domain = await DomainRepository(session, flow.workspace_id).get(str(flow.sending_domain_id))
        refusal = _refusal(domain, email, tokens)
        if domain is not None and refusal is None:
            answer, replaced = await _keep(session, domain, flow, email, tokens, settings, clock)
    if domain is not None and refusal is None:
        if replaced is not None:  # connected again: the grant it replaces is of no use to anyone
            await revoke(client, replaced, settings)
        return answer
    await client.revoke(provider, tokens.refresh_token or tokens.access_token)
    if refusal is None:
        raise not_found("sending domain")
    raise invalid(refusal, ["query", "code"])


def _refusal(domain: SendingDomain | None, email: str, tokens: Tokens) -> str | None:
    """Why the grant cannot be kept for the domain (None: it can)."""
    if domain is None:
        return None
    if not oauth.same_address(email, domain.from_email):
        return (
            f"the connected mailbox is {email}, not the domain's from_email {domain.from_email}: sign in as "
            f"{domain.from_email}"
        )
    if tokens.refresh_token is None:
        return "the provider gave no refresh token (offline access was not granted): connect again"
    return None


async def _keep(
    session: AsyncSession,
    domain: SendingDomain,
    flow: OAuthFlow,
    email: str,
    tokens: Tokens,
    settings: Settings,
    clock: Clock,
) -> tuple[dict[str, Any], OAuthAccount | None]:
    """The grant kept for the domain (and a domain paused for want of it resumed); the grant it replaced."""
    key, now = settings.encryption_key, clock()
    assert tokens.refresh_token is not None, "checked by _refusal"
    values = {
        "provider": flow.provider,
        "email": email,
        "refresh_token_encrypted": crypto.encrypt(key, tokens.refresh_token),
        "access_token_encrypted": crypto.encrypt(key, tokens.access_token),
        "access_expires_at": tokens.expires_at,
        "state": AccountState.ACTIVE.value,
        "last_error": None,
        "refreshed_at": now,
    }
    accounts = OAuthAccountRepository(session, flow.workspace_id)
    if (replaced := await accounts.of_domain(domain)) is None:
        await accounts.add(OAuthAccount(sending_domain_id=domain.id, **values))
    else:
        session.expunge(replaced)  # kept as it was, to revoke
        await accounts.change(replaced, values)
    if domain.state == DomainState.PAUSED and domain.paused_cause == Cause.NEEDS_REAUTH:
        await DomainRepository(session, flow.workspace_id).resume(domain, now)
    log.info("api.oauth.connected", domain=domain.domain, provider=flow.provider)
    answer = {"domain_id": str(domain.id), "provider": flow.provider, "email": email, "state": "active"}
    return answer, replaced


async def disconnect(repo: DomainRepository, raw_id: str) -> OAuthAccount:
    """Forget the domain's grant: the one forgotten, to `revoke` once that is committed (a grant revoked but
    kept would only fail later)."""
    domain = await repo.require(raw_id)
    accounts = repo.sibling(OAuthAccountRepository)
    if (grant := await accounts.of_domain(domain)) is None:
        raise not_found("OAuth2 grant of this sending domain")
    await accounts.delete(grant)
    return grant


async def revoke(client: OAuthClient, grant: OAuthAccount, settings: Settings) -> None:
    """Revoke a grant we no longer keep, where its provider can (best effort)."""
    try:
        provider = await client.provider(ProviderName(grant.provider))
    except (ProviderError, httpx.HTTPError):
        log.warning("api.oauth.revoke_skipped", provider=grant.provider)
        return
    await client.revoke(provider, crypto.decrypt(settings.encryption_key, grant.refresh_token_encrypted))
