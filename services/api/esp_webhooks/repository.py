"""All SQL of the ESP webhooks, scoped to the workspace (`WorkspaceRepository`)."""

from __future__ import annotations

from services.api.kit.repository import WorkspaceRepository
from shared.db.models import EspWebhook


class EspWebhookRepository(WorkspaceRepository[EspWebhook]):
    model = EspWebhook
    noun = "ESP webhook"
    searched = (EspWebhook.provider,)

    async def of_provider(self, provider: str) -> EspWebhook | None:
        found: EspWebhook | None = await self.session.scalar(
            self.scoped().where(EspWebhook.provider == provider)
        )
        return found
