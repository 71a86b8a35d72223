"""OAuth2 for the sending mailboxes (issue 17), pure: providers, PKCE, the authorize URL, when a token is due
for refresh, the address a grant names and the SASL XOAUTH2 string. No HTTP here (`shared/oauth_client.py`).

A deployment registers one client per provider with Google, Microsoft (with its tenant) or a generic OpenID
provider (by issuer URL; its endpoints are read from its discovery document). A workspace connects a domain's
mailbox with the authorization-code flow and PKCE (RFC 7636, S256); the refresh token is kept encrypted and
the access token refreshed a margin before it expires (`MAILDASH_OAUTH_REFRESH_MARGIN_SECONDS`).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode


class ProviderName(enum.StrEnum):
    GOOGLE = "google"
    MICROSOFT = "microsoft"
    OIDC = "oidc"


class AccountState(enum.StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"  # the provider refused the refresh token: a person connects again


@dataclass(frozen=True)
class Provider:
    """Where a provider's endpoints are, and what to ask it for. `revoke` and `userinfo` may be missing
    (Microsoft has neither for these tokens: the address comes from the id token)."""

    name: ProviderName
    client_id: str
    client_secret: str = field(repr=False)
    authorize: str
    token: str
    scopes: tuple[str, ...]
    revoke: str | None = None
    userinfo: str | None = None


GOOGLE_SCOPES = ("https://mail.google.com/", "openid", "email")
MICROSOFT_SCOPES = (
    "https://outlook.office.com/SMTP.Send",
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "offline_access",
    "openid",
    "email",
)
OIDC_SCOPES = ("openid", "email", "offline_access")


def google(client_id: str, client_secret: str) -> Provider:
    return Provider(
        ProviderName.GOOGLE,
        client_id,
        client_secret,
        "https://accounts.google.com/o/oauth2/v2/auth",
        "https://oauth2.googleapis.com/token",
        GOOGLE_SCOPES,
        revoke="https://oauth2.googleapis.com/revoke",
        userinfo="https://openidconnect.googleapis.com/v1/userinfo",
    )


def microsoft(client_id: str, client_secret: str, tenant: str) -> Provider:
    base = f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
    return Provider(
        ProviderName.MICROSOFT,
        client_id,
        client_secret,
        f"{base}/authorize",
        f"{base}/token",
        MICROSOFT_SCOPES,
    )


def discovery_url(issuer: str) -> str:
    """OpenID Connect Discovery 1.0 §4: the configuration document of an issuer."""
    return f"{issuer.rstrip('/')}/.well-known/openid-configuration"


class ProviderError(ValueError):
    """A provider answered something unusable; the text says what, without any token."""


def from_discovery(client_id: str, client_secret: str, document: dict[str, Any]) -> Provider:
    """A generic OpenID provider from its discovery document (RFC 8414 names the revocation endpoint)."""
    try:
        authorize, token = str(document["authorization_endpoint"]), str(document["token_endpoint"])
    except (KeyError, TypeError) as error:
        raise ProviderError(f"the discovery document lacks {error}") from error
    revoke, userinfo = document.get("revocation_endpoint"), document.get("userinfo_endpoint")
    return Provider(
        ProviderName.OIDC,
        client_id,
        client_secret,
        authorize,
        token,
        OIDC_SCOPES,
        revoke=str(revoke) if revoke else None,
        userinfo=str(userinfo) if userinfo else None,
    )


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-]: within RFC 7636's 43–128
        return cls(verifier, challenge(verifier))


def challenge(verifier: str) -> str:
    """RFC 7636 §4.2, S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """The flow's `state`: unguessable, stored only as `state_hash` of it."""
    return secrets.token_urlsafe(32)


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def authorize_url(provider: Provider, redirect_uri: str, state: str, pkce: Pkce, login_hint: str) -> str:
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(provider.scopes),
        "state": state,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "login_hint": login_hint,
    }
    if provider.name == ProviderName.GOOGLE:  # Google gives a refresh token only for offline access
        params |= {"access_type": "offline", "prompt": "consent"}
    separator = "&" if "?" in provider.authorize else "?"
    return f"{provider.authorize}{separator}{urlencode(params)}"


def due_for_refresh(expires_at: datetime | None, now: datetime, margin: timedelta) -> bool:
    """Whether an access token expiring at `expires_at` (None: none held) is refreshed before use."""
    return expires_at is None or expires_at - margin <= now


MAX_LIFETIME = 86_400  # seconds: the longest an access token is taken to live


@dataclass(frozen=True)
class Tokens:
    """A token endpoint's answer (RFC 6749 §5.1); `refresh_token` None when the provider kept the old one."""

    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)

    @classmethod
    def parse(cls, body: Any, now: datetime) -> Tokens:
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise ProviderError("the token endpoint answered no access token")
        try:
            # Clamped to a day: a lifetime of 1e30 would overflow the date, and no provider gives more.
            lifetime = min(int(body.get("expires_in", 3600)), MAX_LIFETIME)
        except (TypeError, ValueError, OverflowError) as error:
            raise ProviderError("the token endpoint answered an expires_in that is not a number") from error
        refresh, id_token = body.get("refresh_token"), body.get("id_token")
        return cls(
            body["access_token"],
            now + timedelta(seconds=lifetime),
            refresh if isinstance(refresh, str) else None,
            id_token if isinstance(id_token, str) else None,
        )


def id_token_email(id_token: str | None) -> str | None:
    """The address an id token names (`email`, else Microsoft's `preferred_username`). Its signature is not
    checked: it came straight from the token endpoint over TLS (OpenID Connect Core §3.1.3.7, 6)."""
    if not id_token or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    for claim in ("email", "preferred_username", "upn"):
        if isinstance(value := claims.get(claim), str) and "@" in value:
            return value
    return None


def same_address(a: str, b: str) -> bool:
    """Addresses compared as providers do: the domain case-insensitively, and (in practice) the local part."""
    return a.strip().lower() == b.strip().lower()


class Mechanism(enum.StrEnum):
    """The SASL mechanisms a bearer token logs in with."""

    OAUTHBEARER = "OAUTHBEARER"  # RFC 7628: Google, Dovecot
    XOAUTH2 = "XOAUTH2"  # Google's and Microsoft's own: both providers take it for SMTP and IMAP


def mechanism(offered: Iterable[str]) -> Mechanism:
    """The standard OAUTHBEARER where the server offers it, else XOAUTH2 (which Microsoft 365 alone takes,
    and may not list)."""
    names = {name.upper() for name in offered}
    return Mechanism.OAUTHBEARER if Mechanism.OAUTHBEARER in names else Mechanism.XOAUTH2


def initial_response(chosen: Mechanism, user: str, host: str, port: int, access_token: str) -> str:
    """The mechanism's initial client response, base64."""
    if chosen == Mechanism.OAUTHBEARER:
        return oauthbearer(user, host, port, access_token)
    return xoauth2(user, access_token)


# What a client answers a SASL server's error challenge with, base64, to end the exchange: RFC 7628 §3.2.3
# asks for %x01 (OAUTHBEARER); Google's XOAUTH2 for an empty response.
ERROR_ACKNOWLEDGEMENT = {Mechanism.OAUTHBEARER: "AQ==", Mechanism.XOAUTH2: ""}


def oauthbearer(user: str, host: str, port: int, access_token: str) -> str:
    """RFC 7628 §3.1: the GS2 header naming the user, then host, port and the bearer token, base64."""
    saslname = user.replace("=", "=3D").replace(",", "=2C")
    raw = f"n,a={saslname},\x01host={host}\x01port={port}\x01auth=Bearer {access_token}\x01\x01"
    return base64.b64encode(raw.encode()).decode("ascii")


def xoauth2(user: str, access_token: str) -> str:
    """The SASL XOAUTH2 initial response, base64: `user=<address>^Aauth=Bearer <token>^A^A`."""
    raw = f"user={user}\x01auth=Bearer {access_token}\x01\x01"
    return base64.b64encode(raw.encode()).decode("ascii")
