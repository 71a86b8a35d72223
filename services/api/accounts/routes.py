"""Logins, the caller, workspaces and users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request

from services.api.accounts.schemas import MeOut, TokenOut, UserOut, UserRef, WorkspaceIn, WorkspaceOut
from services.api.kit.auth import CurrentPrincipal, Principal, issue_token
from services.api.kit.envelope import ApiError, Envelope, invalid
from services.api.kit.openapi import errors
from services.api.kit.schemas import storable

router = APIRouter()


@router.post("/auth/token", response_model=TokenOut, tags=["auth"], responses=errors(401, 403, 429))
async def token(
    request: Request,
    username: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    grant_type: Annotated[str | None, Form(max_length=8, pattern="^password$")] = None,
) -> dict[str, Any]:
    """OAuth2 password flow: `username` is the e-mail address. Plain OAuth2 body, no envelope."""
    try:
        storable(username)
        storable(password)
    except ValueError as error:
        raise invalid(str(error), ["body", "username"]) from error
    principal = await request.app.state.accounts.authenticate(username, password)
    if principal is None:
        raise ApiError(401, "invalid_credentials", "wrong e-mail or password", {"WWW-Authenticate": "Bearer"})
    settings = request.app.state.runtime.settings
    return {
        "access_token": issue_token(settings, principal),
        "token_type": "bearer",
        "expires_in": settings.jwt_ttl_seconds,
    }


@router.get("/auth/me", response_model=Envelope[MeOut], tags=["auth"])
async def me(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    return {"data": await request.app.state.accounts.me(principal)}


@router.post(
    "/workspaces",
    status_code=201,
    response_model=Envelope[WorkspaceOut],
    tags=["workspaces"],
    responses=errors(403, 409),
)
async def create_workspace(
    request: Request, principal: CurrentPrincipal, body: WorkspaceIn
) -> dict[str, Any]:
    """Superuser only: a new workspace and its first admin, who logs in with `admin_email`."""
    superuser_only(principal, "create workspaces")
    accounts = request.app.state.accounts
    return {"data": await accounts.create_workspace(body.name, str(body.admin_email), body.admin_password)}


@router.post(
    "/users/deactivate", response_model=Envelope[UserOut], tags=["users"], responses=errors(403, 404, 409)
)
async def deactivate_user(request: Request, principal: CurrentPrincipal, body: UserRef) -> dict[str, Any]:
    """Superuser only: the user can no longer log in, and every token they hold stops working at once."""
    superuser_only(principal, "deactivate users")
    return {"data": await request.app.state.accounts.set_active(principal, body.email, active=False)}


@router.post("/users/activate", response_model=Envelope[UserOut], tags=["users"], responses=errors(403, 404))
async def activate_user(request: Request, principal: CurrentPrincipal, body: UserRef) -> dict[str, Any]:
    """Superuser only: a deactivated user may log in again."""
    superuser_only(principal, "activate users")
    return {"data": await request.app.state.accounts.set_active(principal, body.email, active=True)}


def superuser_only(principal: Principal, what: str) -> None:
    if not principal.is_superuser:
        raise ApiError(403, "forbidden", f"only a superuser may {what}")
