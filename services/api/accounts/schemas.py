"""Bodies of the account routes: tokens, the caller, workspaces and users."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from services.api.kit.schemas import Answer, Email, Strict


class TokenOut(Answer):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int


class MeOut(BaseModel):
    user: dict[str, Any]
    workspace: dict[str, Any]


class WorkspaceIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    admin_email: Email
    admin_password: str = Field(min_length=8, max_length=1024)


class WorkspaceRef(BaseModel):
    id: str
    name: str


class AdminRef(BaseModel):
    id: str
    email: str


class WorkspaceOut(BaseModel):
    workspace: WorkspaceRef
    admin: AdminRef


class UserRef(Strict):
    email: Email


class UserOut(BaseModel):
    id: str
    email: str
    workspace_id: str
    is_superuser: bool
    active: bool
