"""Bodies of the workspace settings route."""

from __future__ import annotations

from pydantic import BaseModel, Field

from services.api.domains.schemas import EffectiveThresholds, HealthThresholds
from services.api.kit.schemas import Strict


class SettingsPatch(Strict):
    # The fields sent change; null in one: the default again.
    health_thresholds: HealthThresholds = Field(default_factory=HealthThresholds)


class SettingsOut(BaseModel):
    health_thresholds: HealthThresholds  # the workspace's own thresholds for its sending domains
    health_thresholds_effective: EffectiveThresholds  # with the defaults for the rest: what a domain inherits
