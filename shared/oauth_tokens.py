"""Access tokens of the sending domains' OAuth2 grants, for the sender (SMTP) and the mailbox reader (IMAP).

A token is used while it has more than the refresh margin (300 s by default) to live; then it is refreshed,
one refresh at a time per grant across processes (the grant's row is locked for it, and whoever waited
reads the new token). A server that rejects a token the grant still holds gets one forced refresh
(`access(..., rejected=token)`), and a second rejection is `refuse`d. A provider that refuses the refresh
(`invalid_grant`) and a refused token both mark the grant `needs_reauth` and pause its domain.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import httpx
import structlog

from shared import crypto, oauth
from shared.clock import Clock
from shared.db import asyncpg_dsn, oauth_accounts
from shared.db.oauth_accounts import Grant
from shared.oauth import AccountState, ProviderError, ProviderName
from shared.oauth_client import GrantRefused, OAuthClient
from shared.settings import Settings

log = structlog.get_logger()


@dataclass(frozen=True)
class Access:
    """What a login needs: the address and a bearer token for it (never logged)."""

    email: str
    token: str

    def __repr__(self) -> str:
        return f"Access({self.email!r}, token=…)"


class NeedsReauth(Exception):
    """The domain's grant was refused: nothing is sent or read with it until a person connects again."""


class TokenUnavailable(Exception):
    """The provider could not be asked now (unreachable, a 5xx): try again later."""


class TokenSource:
    """Open with `async with`: its own few database connections (a refresh holds one while it waits for the
    provider, never one of the caller's) and the HTTP client of the providers."""

    def __init__(self, settings: Settings, clock: Clock, client: OAuthClient | None = None) -> None:
        self._settings = settings
        self._clock = clock
        self._client = client or OAuthClient(settings)
        self._margin = timedelta(seconds=settings.oauth_refresh_margin_seconds)
        self._pool: asyncpg.Pool | None = None
        self.refreshes = 0  # done by this process: for its metrics and the tests

    async def __aenter__(self) -> TokenSource:
        self._pool = await asyncpg.create_pool(
            asyncpg_dsn(self._settings.database_url), min_size=0, max_size=2, server_settings=_NAME
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()
        if self._pool is not None:
            await self._pool.close()

    @property
    def _db(self) -> asyncpg.Pool:
        assert self._pool is not None, "use the token source as `async with TokenSource(...)`"
        return self._pool

    async def access(self, domain_id: uuid.UUID, rejected: str | None = None) -> Access | None:
        """A token to log in with for the domain's grant (None: it has none, it logs in with a password),
        refreshed first when due, or when `rejected` (the token a server just refused) is still the one
        held. Raises NeedsReauth, or TokenUnavailable."""
        async with self._db.acquire() as db:
            grant = await oauth_accounts.read(db, domain_id)
            if grant is None:
                return None
            if (held := self._usable(grant, rejected)) is not None:
                return held
            async with db.transaction():
                grant = await oauth_accounts.read(db, domain_id, lock=True)
                if grant is None:  # disconnected meanwhile
                    return None
                if (held := self._usable(grant, rejected)) is not None:  # refreshed while we waited
                    return held
                refreshed = await self._refresh(db, grant)
        # Raised once committed: a refused grant stays marked, and its domain paused.
        if isinstance(refreshed, Exception):
            raise refreshed
        return refreshed

    async def refuse(self, domain_id: uuid.UUID, reason: str) -> None:
        """The grant cannot log in (a server refused a freshly refreshed token too, or it was refused
        before and a person resumed the domain without connecting again): it needs a person, and its domain
        is paused."""
        async with self._db.acquire() as db, db.transaction():
            grant = await oauth_accounts.read(db, domain_id, lock=True)
            if grant is not None:
                await self._needs_reauth(db, grant, reason)

    def _usable(self, grant: Grant, rejected: str | None) -> Access | None:
        """The token held, if it may be used: the grant is active, the token not due for refresh and not the
        one a server rejected."""
        if grant.state != AccountState.ACTIVE:
            raise NeedsReauth(f"the OAuth2 grant of {grant.email} needs to be connected again")
        encrypted = grant.access_token_encrypted
        if encrypted is None or oauth.due_for_refresh(grant.access_expires_at, self._clock(), self._margin):
            return None
        token = crypto.decrypt(self._settings.encryption_key, encrypted)
        return None if token == rejected else Access(grant.email, token)

    async def _refresh(self, db: asyncpg.Connection, grant: Grant) -> Access | NeedsReauth:
        """The new token, kept; or the refusal, recorded (for the caller to raise after committing)."""
        key = self._settings.encryption_key
        try:
            provider = await self._client.provider(ProviderName(grant.provider))
            tokens = await self._client.refresh(
                provider, crypto.decrypt(key, grant.refresh_token_encrypted), self._clock()
            )
        except GrantRefused as error:
            await self._needs_reauth(db, grant, f"the provider refused the refresh: {error}")
            return NeedsReauth(f"the provider refused the refresh: {error}")
        except (ProviderError, httpx.HTTPError) as error:
            log.warning("oauth.refresh.failed", domain=grant.domain, error=f"{type(error).__name__}: {error}")
            raise TokenUnavailable(f"the OAuth2 provider could not refresh the token: {error}") from error
        refresh = crypto.encrypt(key, tokens.refresh_token) if tokens.refresh_token else None
        await oauth_accounts.keep(
            db, grant, crypto.encrypt(key, tokens.access_token), tokens.expires_at, refresh, self._clock()
        )
        self.refreshes += 1
        log.info("oauth.refresh.done", domain=grant.domain, expires_at=tokens.expires_at.isoformat())
        return Access(grant.email, tokens.access_token)

    async def _needs_reauth(self, db: asyncpg.Connection, grant: Grant, reason: str) -> None:
        paused = await oauth_accounts.needs_reauth(db, grant, reason, self._clock)
        log.warning("oauth.grant.needs_reauth", domain=grant.domain, reason=reason[:300], paused=paused)


_NAME = {"application_name": "maildash-oauth"}
