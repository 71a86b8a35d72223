"""All SQL of a workspace's own settings, scoped to the workspace (`WorkspaceRepository`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.dialects.postgresql import insert

from services.api.kit.repository import WorkspaceRepository
from shared.db.models import WorkspaceSetting


class WorkspaceSettingsRepository(WorkspaceRepository[WorkspaceSetting]):
    model = WorkspaceSetting
    noun = "workspace settings"

    async def health_thresholds(self) -> dict[str, Any]:
        """The workspace's own health thresholds for its sending domains (none set: empty)."""
        found = await self.session.scalar(self.scoped(WorkspaceSetting.health_thresholds))
        return dict(found or {})

    async def set_health_thresholds(self, values: dict[str, Any]) -> None:
        statement = insert(WorkspaceSetting).values(
            id=uuid.uuid4(), workspace_id=self.workspace_id, health_thresholds=values
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[WorkspaceSetting.workspace_id], set_={"health_thresholds": values}
            )
        )
