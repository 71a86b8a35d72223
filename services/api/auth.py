"""Passwords (argon2 via pwdlib, off the event loop) and JWTs (PyJWT, HS256 pinned, `exp` and audience
required). A token names its user; what the user may do is read from the database on every request."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, TypeVar

import jwt
import structlog
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from pwdlib import PasswordHash

from services.api.envelope import ApiError
from shared.clock import utcnow
from shared.settings import Settings

ALGORITHM = "HS256"
ARGON2_NICENESS = 10
T = TypeVar("T")
oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
log = structlog.get_logger()


class Passwords:
    """Argon2 hashing and verification in a few threads (argon2-cffi releases the GIL while it works), so
    that no password check ever holds the event loop that serves every other request."""

    def __init__(self, workers: int, queue: int) -> None:
        self._hasher = PasswordHash.recommended()
        # Niced threads (Linux nices per thread, and argon2's own lane threads inherit it): a login flood
        # still gets the CPU that the event loop leaves, but the loop gets it first (healthz p99 under load
        # here: ~100 ms without, ~20 ms with).
        self._threads = ThreadPoolExecutor(
            workers, thread_name_prefix="argon2", initializer=os.nice, initargs=(ARGON2_NICENESS,)
        )
        self._capacity = workers + queue
        self._admitted = 0
        # An address without a user is checked against this hash, so that it takes as long as a real one.
        self._nobody = self._hasher.hash(secrets.token_urlsafe())

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """A place among the logins whose password is being checked or waits for a thread; 429 at once when
        all are taken, so that a flood of logins is refused instead of queued without bound."""
        if self._admitted >= self._capacity:
            log.warning("api.login.shed", checking=self._admitted)
            raise ApiError(
                429,
                "too_many_requests",
                "too many logins at once; try again in a second",
                {"Retry-After": "1"},
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def hash(self, password: str) -> str:
        return await self._in_thread(self._hasher.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Whether `password` matches; None (no such user) takes the same time and is never a match."""
        matches = await self._in_thread(self._hasher.verify, password, password_hash or self._nobody)
        return matches and password_hash is not None

    async def _in_thread(self, function: Callable[..., T], *args: str) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    workspace_id: uuid.UUID
    email: str
    is_superuser: bool


def issue_token(settings: Settings, principal: Principal) -> str:
    now = utcnow()
    claims = {
        "sub": str(principal.user_id),
        "wid": str(principal.workspace_id),
        "email": principal.email,
        "su": principal.is_superuser,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + timedelta(seconds=settings.jwt_ttl_seconds),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def decode_token(settings: Settings, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            options={"require": ["exp", "iat", "sub", "aud"]},
        )
        return Principal(
            uuid.UUID(claims["sub"]), uuid.UUID(claims["wid"]), claims["email"], bool(claims["su"])
        )
    except jwt.ExpiredSignatureError as error:
        raise _unauthorized("token expired; request a new one at /api/v1/auth/token") from error
    except (jwt.InvalidTokenError, KeyError, ValueError) as error:
        raise _unauthorized("invalid token") from error


async def current_principal(request: Request, token: Annotated[str | None, Depends(oauth2)]) -> Principal:
    """The token's user as the database has them now: deleted or deactivated users and users moved to another
    workspace lose their tokens at once, and a demoted superuser loses the rights."""
    if not token:
        raise _unauthorized("missing bearer token; get one at /api/v1/auth/token")
    claimed = decode_token(request.app.state.runtime.settings, token)
    principal: Principal | None = await request.app.state.accounts.principal(claimed.user_id)
    if principal is None:
        raise _unauthorized("the user of this token no longer exists or is deactivated")
    if principal.workspace_id != claimed.workspace_id:
        raise _unauthorized("the user of this token has moved to another workspace; log in again")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
