"""All SQL of the outgoing webhooks' routes, scoped to the workspace (`WorkspaceRepository`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func

from services.api.kit.envelope import not_found
from services.api.kit.repository import WorkspaceRepository, parse_id
from shared.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


class WebhookEndpointRepository(WorkspaceRepository[WebhookEndpoint]):
    model = WebhookEndpoint
    noun = "webhook endpoint"
    searched = (WebhookEndpoint.url, WebhookEndpoint.description)

    async def deliveries(
        self, endpoint_id: uuid.UUID, page: int, page_size: int, *where: Any
    ) -> tuple[list[WebhookDelivery], int]:
        """The endpoint's deliveries, newest first."""
        mine = (WebhookDelivery.endpoint_id == endpoint_id, *where)
        total = await self.session.scalar(self.scoped(func.count(), model=WebhookDelivery).where(*mine))
        rows = await self.session.scalars(
            self.scoped(model=WebhookDelivery)
            .where(*mine)
            .order_by(WebhookDelivery.seq.desc())
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return list(rows), total or 0

    async def attempts(
        self, endpoint_id: uuid.UUID, page: int, page_size: int, *where: Any
    ) -> tuple[list[WebhookAttempt], int]:
        """The endpoint's attempts, newest first."""
        mine = (WebhookAttempt.endpoint_id == endpoint_id, *where)
        total = await self.session.scalar(self.scoped(func.count(), model=WebhookAttempt).where(*mine))
        rows = await self.session.scalars(
            self.scoped(model=WebhookAttempt)
            .where(*mine)
            .order_by(WebhookAttempt.attempted_at.desc(), WebhookAttempt.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return list(rows), total or 0

    async def redeliver(self, endpoint_id: uuid.UUID, raw_id: str) -> WebhookDelivery:
        """The delivery pending again, due now, its failures forgotten; it goes out in its place in the
        endpoint's order (before the endpoint's later pending ones). 404 for another endpoint's."""
        delivery_id = parse_id(raw_id)
        if delivery_id is None:
            raise not_found("webhook delivery")
        statement = (
            self.scoped_update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id)
            .values(status="pending", next_attempt_at=func.now(), failures=0, first_attempt_at=None)
            .returning(WebhookDelivery)
        )
        found: WebhookDelivery | None = (
            await self.session.scalars(statement, execution_options={"synchronize_session": False})
        ).one_or_none()
        if found is None:
            raise not_found("webhook delivery")
        return found
