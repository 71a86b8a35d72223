"""Use cases of a workspace's own settings: its sending domains' health thresholds (`shared.reputation`),
which each domain may override for itself."""

from __future__ import annotations

import dataclasses
from typing import Any

from services.api.workspace.repository import WorkspaceSettingsRepository
from services.api.workspace.schemas import SettingsPatch
from shared.reputation import Thresholds


def settings_out(health_thresholds: dict[str, Any]) -> dict[str, Any]:
    return {
        "health_thresholds": health_thresholds,
        "health_thresholds_effective": dataclasses.asdict(Thresholds.layered(health_thresholds)),
    }


async def get(repo: WorkspaceSettingsRepository) -> dict[str, Any]:
    return settings_out(await repo.health_thresholds())


async def update(repo: WorkspaceSettingsRepository, body: SettingsPatch) -> dict[str, Any]:
    """The thresholds sent change, at once for every domain that does not set them itself."""
    values = body.health_thresholds.over(await repo.health_thresholds())
    await repo.set_health_thresholds(values)
    return settings_out(values)
