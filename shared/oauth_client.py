"""Talking to OAuth2 providers over HTTP (httpx): discovery, the code exchange, refresh, revocation and the
address a grant names. Thin: what the answers mean is decided in `shared/oauth.py`. No token is ever put in a
log line or an exception's text."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import structlog

from shared import oauth
from shared.oauth import Provider, ProviderError, ProviderName, Tokens
from shared.settings import Settings

log = structlog.get_logger()


class GrantRefused(Exception):
    """The provider refused the grant for good (`invalid_grant`: revoked, expired, password changed): only a
    person connecting again helps."""


def configured(settings: Settings) -> dict[ProviderName, tuple[str, str]]:
    """The providers this deployment registered a client with: their client id and secret."""
    clients = {
        ProviderName.GOOGLE: (settings.oauth_google_client_id, settings.oauth_google_client_secret),
        ProviderName.MICROSOFT: (settings.oauth_microsoft_client_id, settings.oauth_microsoft_client_secret),
        ProviderName.OIDC: (settings.oauth_oidc_client_id, settings.oauth_oidc_client_secret),
    }
    if not settings.oauth_oidc_issuer:
        del clients[ProviderName.OIDC]
    return {name: client for name, client in clients.items() if client[0]}


class OAuthClient:
    """One per process: an HTTP client and the providers' descriptors (a generic provider's discovery
    document is read once)."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._http = http or httpx.AsyncClient(timeout=settings.oauth_timeout_seconds)
        self._providers: dict[ProviderName, Provider] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def provider(self, name: ProviderName) -> Provider:
        """The descriptor of a configured provider. Raises ProviderError (not configured, or a discovery
        document that cannot be read)."""
        if name in self._providers:
            return self._providers[name]
        clients = configured(self._settings)
        if name not in clients:
            raise ProviderError(f"the OAuth2 provider {name.value} is not configured on this deployment")
        client_id, secret = clients[name]
        if name == ProviderName.GOOGLE:
            provider = oauth.google(client_id, secret)
        elif name == ProviderName.MICROSOFT:
            provider = oauth.microsoft(client_id, secret, self._settings.oauth_microsoft_tenant)
        else:
            document = await self._json("GET", oauth.discovery_url(self._settings.oauth_oidc_issuer))
            provider = oauth.from_discovery(client_id, secret, document)
        self._providers[name] = provider
        return provider

    async def exchange(self, provider: Provider, code: str, verifier: str, now: datetime) -> Tokens:
        body = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._settings.oauth_redirect_url,
            "code_verifier": verifier,
        }
        return Tokens.parse(await self._token(provider, body), now)

    async def refresh(self, provider: Provider, refresh_token: str, now: datetime) -> Tokens:
        """New tokens for a grant. Raises GrantRefused when the provider refuses it for good, ProviderError
        or httpx.HTTPError when it could not answer now."""
        body = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if provider.name == ProviderName.MICROSOFT:  # it asks for the scopes again
            body["scope"] = " ".join(provider.scopes)
        return Tokens.parse(await self._token(provider, body), now)

    async def revoke(self, provider: Provider, token: str) -> bool:
        """RFC 7009, best effort: False when the provider has no revocation endpoint or did not take it."""
        if provider.revoke is None:
            return False
        try:
            reply = await self._http.post(
                provider.revoke,
                data={"token": token, "token_type_hint": "refresh_token"},
                auth=(provider.client_id, provider.client_secret),
            )
        except httpx.HTTPError as error:
            log.warning("oauth.revoke.failed", provider=provider.name.value, error=type(error).__name__)
            return False
        return reply.status_code == 200

    async def email_of(self, provider: Provider, tokens: Tokens) -> str:
        """The address the grant names: its id token's, else the userinfo endpoint's."""
        if (email := oauth.id_token_email(tokens.id_token)) is not None:
            return email
        if provider.userinfo is None:
            raise ProviderError("the provider named no address (no id token with an e-mail, no userinfo)")
        info = await self._json(
            "GET", provider.userinfo, headers={"Authorization": f"Bearer {tokens.access_token}"}
        )
        if not isinstance(email := info.get("email"), str):
            raise ProviderError("the provider's userinfo names no e-mail address")
        return email

    async def _token(self, provider: Provider, body: dict[str, str]) -> Any:
        reply = await self._http.post(
            provider.token, data=body, auth=(provider.client_id, provider.client_secret)
        )
        answer = _body(reply)
        if reply.status_code == 200:
            return answer
        error = answer.get("error") if isinstance(answer, dict) else None
        if error == "invalid_grant":
            raise GrantRefused(_described(answer))
        raise ProviderError(f"the token endpoint answered {reply.status_code} {_described(answer)}".strip())

    async def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        reply = await self._http.request(method, url, **kwargs)
        answer = _body(reply)
        if reply.status_code != 200 or not isinstance(answer, dict):
            raise ProviderError(f"{url} answered {reply.status_code}")
        return answer


def _body(reply: httpx.Response) -> Any:
    try:
        return reply.json()
    except ValueError:
        return None


def _described(answer: Any) -> str:
    """An OAuth2 error answer in words (RFC 6749 §5.2): its code and description, never more."""
    if not isinstance(answer, dict):
        return ""
    parts = [str(answer.get(key))[:200] for key in ("error", "error_description") if answer.get(key)]
    return ": ".join(parts)
