"""All SQL of suppressions, scoped to the workspace (`WorkspaceRepository`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func

from services.api.kit.repository import WorkspaceRepository
from shared.db.models import Suppression


class SuppressionRepository(WorkspaceRepository[Suppression]):
    model = Suppression
    noun = "suppression"
    searched = (Suppression.email, Suppression.domain)

    async def matching(self, column: Any, value: str) -> Suppression | None:
        """The suppression whose `column` (email or domain) is `value`, compared case-insensitively."""
        found: Suppression | None = await self.session.scalar(
            self.scoped().where(func.lower(column) == value.lower())
        )
        return found

    async def lists(self) -> tuple[list[str], list[str]]:
        """Every suppressed address and every suppressed domain."""
        rows = (await self.session.execute(self.scoped(Suppression.email, Suppression.domain))).all()
        return [r.email for r in rows if r.email], [r.domain for r in rows if r.domain]
