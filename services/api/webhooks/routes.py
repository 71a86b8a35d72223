"""Outgoing webhooks: endpoints that hear the workspace's events, their deliveries and attempts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import PageNumber, PageSize, unit_of_work
from services.api.kit.envelope import Envelope, Page
from services.api.kit.reads import add_reads, each
from services.api.kit.schemas import DeletedOut
from services.api.webhooks import service
from services.api.webhooks.repository import WebhookEndpointRepository
from services.api.webhooks.schemas import (
    WebhookAttemptOut,
    WebhookDeliveryOut,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookEndpointPatch,
)

router = APIRouter(tags=["webhook-endpoints"])
DeliveryStatus = Annotated[Literal["pending", "delivered", "failed"] | None, Query()]


@router.post("/webhook-endpoints", status_code=201, response_model=Envelope[WebhookEndpointOut])
async def create_webhook_endpoint(
    request: Request, principal: CurrentPrincipal, body: WebhookEndpointIn
) -> dict[str, Any]:
    """Events of `event_types` that happen from now on are posted to `url`, signed with `secret`."""
    async with unit_of_work(request, principal, WebhookEndpointRepository) as repo:
        return {"data": await service.create(repo, body, request.app.state.runtime.settings)}


add_reads(
    router, "webhook-endpoints", "webhook_endpoint", WebhookEndpointRepository, WebhookEndpointOut,
    each(service.endpoint_out),
)  # fmt: skip


@router.patch("/webhook-endpoints/{webhook_endpoint_id}", response_model=Envelope[WebhookEndpointOut])
async def update_webhook_endpoint(
    request: Request, principal: CurrentPrincipal, webhook_endpoint_id: str, body: WebhookEndpointPatch
) -> dict[str, Any]:
    """`enabled: true` enables an endpoint that was disabled (by hand or after failing for too long): its
    pending deliveries go out again."""
    settings = request.app.state.runtime.settings
    async with unit_of_work(request, principal, WebhookEndpointRepository) as repo:
        return {"data": await service.update(repo, webhook_endpoint_id, body, settings)}


@router.delete("/webhook-endpoints/{webhook_endpoint_id}", response_model=Envelope[DeletedOut])
async def delete_webhook_endpoint(
    request: Request, principal: CurrentPrincipal, webhook_endpoint_id: str
) -> dict[str, Any]:
    async with unit_of_work(request, principal, WebhookEndpointRepository) as repo:
        return {"data": await service.delete(repo, webhook_endpoint_id)}


@router.get(
    "/webhook-endpoints/{webhook_endpoint_id}/deliveries",
    response_model=Envelope[Page[WebhookDeliveryOut]],
)
async def list_webhook_deliveries(
    request: Request,
    principal: CurrentPrincipal,
    webhook_endpoint_id: str,
    page: PageNumber = 1,
    page_size: PageSize = 20,
    status: DeliveryStatus = None,
) -> dict[str, Any]:
    """Newest first: one per event the endpoint was to hear."""
    async with unit_of_work(request, principal, WebhookEndpointRepository) as repo:
        return await service.deliveries(repo, webhook_endpoint_id, page, page_size, status)


@router.get(
    "/webhook-endpoints/{webhook_endpoint_id}/attempts",
    response_model=Envelope[Page[WebhookAttemptOut]],
)
async def list_webhook_attempts(
    request: Request,
    principal: CurrentPrincipal,
    webhook_endpoint_id: str,
    page: PageNumber = 1,
    page_size: PageSize = 20,
) -> dict[str, Any]:
    """Newest first: every request made to the endpoint, with what it got."""
    async with unit_of_work(request, principal, WebhookEndpointRepository) as repo:
        return await service.attempts(repo, webhook_endpoint_id, page, page_size)


@router.post(
    "/webhook-endpoints/{webhook_endpoint_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=Envelope[WebhookDeliveryOut],
)
async def redeliver_webhook_delivery(
    request: Request, principal: CurrentPrincipal, webhook_endpoint_id: str, delivery_id: str
) -> dict[str, Any]:
    """Send the delivery again (whatever its status), with its `webhook-id`, before the endpoint's later
    pending ones. A disabled endpoint sends it once it is enabled."""
    async with unit_of_work(request, principal, WebhookEndpointRepository) as repo:
        return {"data": await service.redeliver(repo, webhook_endpoint_id, delivery_id)}
