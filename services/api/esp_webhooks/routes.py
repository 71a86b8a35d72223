"""ESP webhooks: where each ESP posts its events to the tracker, and what the tracker checks them with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.api.esp_webhooks import service
from services.api.esp_webhooks.repository import EspWebhookRepository
from services.api.esp_webhooks.schemas import EspWebhookIn, EspWebhookOut, EspWebhookPatch
from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import unit_of_work
from services.api.kit.envelope import Envelope
from services.api.kit.openapi import errors
from services.api.kit.reads import add_reads, each
from services.api.kit.schemas import DeletedOut

router = APIRouter(tags=["esp-webhooks"])


@router.post("/esp-webhooks", status_code=201, response_model=Envelope[EspWebhookOut], responses=errors(409))
async def create_esp_webhook(
    request: Request, principal: CurrentPrincipal, body: EspWebhookIn
) -> dict[str, Any]:
    """One per provider: give the answer's `url` to the ESP as its event webhook."""
    async with unit_of_work(request, principal, EspWebhookRepository) as repo:
        return {"data": await service.create(repo, body, request.app.state.runtime.settings)}


add_reads(
    router,
    "esp-webhooks",
    "esp_webhook",
    EspWebhookRepository,
    EspWebhookOut,
    each(service.webhook_out),
    with_settings=True,
)


@router.patch("/esp-webhooks/{esp_webhook_id}", response_model=Envelope[EspWebhookOut])
async def update_esp_webhook(
    request: Request, principal: CurrentPrincipal, esp_webhook_id: str, body: EspWebhookPatch
) -> dict[str, Any]:
    async with unit_of_work(request, principal, EspWebhookRepository) as repo:
        return {"data": await service.update(repo, esp_webhook_id, body, request.app.state.runtime.settings)}


@router.delete("/esp-webhooks/{esp_webhook_id}", response_model=Envelope[DeletedOut])
async def delete_esp_webhook(
    request: Request, principal: CurrentPrincipal, esp_webhook_id: str
) -> dict[str, Any]:
    """Its URL answers 404 from now on; the events it took stay counted."""
    async with unit_of_work(request, principal, EspWebhookRepository) as repo:
        return {"data": await service.delete(repo, esp_webhook_id)}
