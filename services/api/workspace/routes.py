"""The caller's workspace's own settings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import unit_of_work
from services.api.kit.envelope import Envelope
from services.api.workspace import service
from services.api.workspace.repository import WorkspaceSettingsRepository
from services.api.workspace.schemas import SettingsOut, SettingsPatch

router = APIRouter(tags=["workspace"])


@router.get("/workspace/settings", response_model=Envelope[SettingsOut])
async def get_settings(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
    async with unit_of_work(request, principal, WorkspaceSettingsRepository) as repo:
        return {"data": await service.get(repo)}


@router.patch("/workspace/settings", response_model=Envelope[SettingsOut])
async def update_settings(
    request: Request, principal: CurrentPrincipal, body: SettingsPatch
) -> dict[str, Any]:
    """`health_thresholds`: those of the workspace's sending domains, each of which may override them (its own
    `health_thresholds`). The fields sent change; null in one: the default again."""
    async with unit_of_work(request, principal, WorkspaceSettingsRepository) as repo:
        return {"data": await service.update(repo, body)}
