"""All SQL of the sending domains, scoped to the workspace (`WorkspaceRepository`)."""

from __future__ import annotations

from services.api.kit.repository import WorkspaceRepository
from shared.db.models import SendingDomain


class DomainRepository(WorkspaceRepository[SendingDomain]):
    model = SendingDomain
    noun = "sending domain"
    searched = (SendingDomain.domain, SendingDomain.from_email)

    async def named(self, names: list[str]) -> dict[str, SendingDomain]:
        """The workspace's domains among `names`, by name."""
        rows = await self.session.scalars(self.scoped().where(SendingDomain.domain.in_(names)))
        return {row.domain: row for row in rows}
