"""Use cases of the outgoing webhooks: endpoints (their secret encrypted like SMTP passwords, never shown),
their deliveries and attempts, and sending a delivery again. The worker is `services/webhooks`."""

from __future__ import annotations

from typing import Any

from pydantic import HttpUrl

from services.api.kit.deps import page_out
from services.api.kit.hosts import require_public
from services.api.webhooks.repository import WebhookEndpointRepository
from services.api.webhooks.schemas import WebhookEndpointIn, WebhookEndpointPatch
from shared import crypto
from shared.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from shared.settings import Settings


def endpoint_out(row: WebhookEndpoint) -> dict[str, Any]:
    shown = ("url", "description", "enabled", "disabled_reason", "disabled_at", "created_at", "updated_at")
    return {"id": str(row.id), "event_types": list(row.event_types), **{n: getattr(row, n) for n in shown}}


def delivery_out(row: WebhookDelivery) -> dict[str, Any]:
    shown = ("event_type", "status", "attempts", "delivered_at", "last_error", "payload", "created_at")
    return {
        "id": str(row.id),
        "event_id": str(row.event_id),
        "next_attempt_at": row.next_attempt_at if row.status == "pending" else None,
        **{name: getattr(row, name) for name in shown},
    }


def attempt_out(row: WebhookAttempt) -> dict[str, Any]:
    shown = ("attempted_at", "status_code", "succeeded", "duration_ms", "error", "response")
    return {"id": str(row.id), "delivery_id": str(row.delivery_id), **{n: getattr(row, n) for n in shown}}


async def _public(settings: Settings, url: HttpUrl) -> None:
    """The public-address rule, as for SMTP hosts; the worker judges it again at every connection."""
    host, port = (url.host or "").strip("[]"), url.port or 443
    await require_public(settings, host, port, "the URL's host", ["body", "url"])


def _columns(changes: dict[str, Any], settings: Settings) -> dict[str, Any]:
    columns = {name: value for name, value in changes.items() if name != "secret"}
    if "secret" in changes:
        columns["secret_encrypted"] = crypto.encrypt(settings.encryption_key, changes["secret"])
    if changes.get("enabled"):
        columns |= {"disabled_reason": None, "disabled_at": None}
    return columns


async def create(
    repo: WebhookEndpointRepository, body: WebhookEndpointIn, settings: Settings
) -> dict[str, Any]:
    await _public(settings, body.url)
    changes = body.model_dump(mode="json")
    return endpoint_out(await repo.add(WebhookEndpoint(**_columns(changes, settings))))


async def update(
    repo: WebhookEndpointRepository, raw_id: str, body: WebhookEndpointPatch, settings: Settings
) -> dict[str, Any]:
    row = await repo.require(raw_id)
    changes = body.changes()
    if body.url is not None:
        await _public(settings, body.url)
    return endpoint_out(await repo.change(row, _columns(changes, settings)))


async def delete(repo: WebhookEndpointRepository, raw_id: str) -> dict[str, Any]:
    """Its pending deliveries go with it."""
    row = await repo.require(raw_id)
    await repo.delete(row)
    return {"id": str(row.id), "deleted": True}


async def deliveries(
    repo: WebhookEndpointRepository, raw_id: str, page: int, page_size: int, status: str | None
) -> dict[str, Any]:
    endpoint = await repo.require(raw_id)
    where = [WebhookDelivery.status == status] if status else []
    rows, total = await repo.deliveries(endpoint.id, page, page_size, *where)
    return page_out(map(delivery_out, rows), total, page, page_size)


async def attempts(repo: WebhookEndpointRepository, raw_id: str, page: int, page_size: int) -> dict[str, Any]:
    endpoint = await repo.require(raw_id)
    rows, total = await repo.attempts(endpoint.id, page, page_size)
    return page_out(map(attempt_out, rows), total, page, page_size)


async def redeliver(repo: WebhookEndpointRepository, raw_id: str, delivery_id: str) -> dict[str, Any]:
    endpoint = await repo.require(raw_id)
    return delivery_out(await repo.redeliver(endpoint.id, delivery_id))
