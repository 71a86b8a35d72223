"""Who is calling: JWTs (PyJWT, HS256 pinned, `exp` and audience required) and the principal of a request. A
token names its user; what the user may do is read from the database on every request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from services.api.kit.envelope import ApiError
from shared.clock import utcnow
from shared.settings import Settings

ALGORITHM = "HS256"
oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


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
