"""Use cases of a workspace's own settings: its sending domains' health thresholds (`shared.reputation`),
which each domain may override for itself."""

from __future__ import annotations

import dataclasses
from typing import Any

from services.api.workspace.repository import WorkspaceSettingsRepository
from services.api.workspace.schemas import SettingsPatch
from shared.reputation import Thresholds


def settings_out(domain_health: dict[str, Any]) -> dict[str, Any]:
    return {
        "domain_health": domain_health,
        "domain_health_effective": dataclasses.asdict(Thresholds.layered(domain_health)),
    }


async def get(repo: WorkspaceSettingsRepository) -> dict[str, Any]:
    return settings_out(await repo.domain_health())


async def update(repo: WorkspaceSettingsRepository, body: SettingsPatch) -> dict[str, Any]:
    """The thresholds sent change, at once for every domain that does not set them itself."""
    values = body.domain_health.over(await repo.domain_health())
    await repo.set_domain_health(values)
    return settings_out(values)
