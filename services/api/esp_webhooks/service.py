"""Use cases of the ESP webhooks: one per provider and workspace, at a tracker URL named by a random token.
Its secrets (Postmark's password, Mailgun's signing key) are encrypted like SMTP passwords and never shown."""

from __future__ import annotations

import secrets
from typing import Any

from services.api.esp_webhooks.repository import EspWebhookRepository
from services.api.esp_webhooks.schemas import EspWebhookIn, EspWebhookPatch
from services.api.kit.envelope import conflict, invalid
from shared import crypto
from shared.db.models import EspWebhook
from shared.settings import Settings

# What each provider's webhook is checked with: every one of its fields, and no other provider's.
TAKES = {
    "ses": ("topic_arns",),
    "postmark": ("username", "password"),
    "sendgrid": ("public_key",),
    "mailgun": ("signing_key",),
}
SECRETS = ("password", "signing_key")
FIELDS = frozenset(name for names in TAKES.values() for name in names)


def webhook_out(row: EspWebhook, settings: Settings) -> dict[str, Any]:
    secret = row.secret_encrypted is not None
    return {
        "id": str(row.id),
        "provider": row.provider,
        "url": f"{settings.public_tracker_url.rstrip('/')}/webhooks/esp/{row.provider}/{row.token}",
        "active": row.active,
        "topic_arns": list(row.topic_arns),
        "username": row.username,
        "has_password": row.provider == "postmark" and secret,
        "public_key": row.public_key,
        "has_signing_key": row.provider == "mailgun" and secret,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _columns(provider: str, given: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The columns of the provider's fields in `given`; 422 for another provider's field."""
    columns = {}
    for name, value in given.items():
        if name not in TAKES[provider]:
            raise invalid(
                f"a {provider} webhook takes {', '.join(TAKES[provider])}, not {name}", ["body", name]
            )
        if name in SECRETS:
            columns["secret_encrypted"] = crypto.encrypt(settings.encryption_key, value)
        else:
            columns[name] = value
    return columns


async def create(repo: EspWebhookRepository, body: EspWebhookIn, settings: Settings) -> dict[str, Any]:
    given = body.model_dump(include=set(FIELDS), exclude_none=True)
    missing = [name for name in TAKES[body.provider] if name not in given]
    if missing:
        raise invalid(f"a {body.provider} webhook needs {', '.join(missing)}", ["body", missing[0]])
    columns = _columns(body.provider, given, settings)
    if await repo.of_provider(body.provider) is not None:
        raise conflict(f"this workspace has a {body.provider} webhook already; change it instead")
    row = EspWebhook(provider=body.provider, token=secrets.token_urlsafe(24), active=body.active, **columns)
    return webhook_out(await repo.add(row), settings)


async def update(
    repo: EspWebhookRepository, raw_id: str, body: EspWebhookPatch, settings: Settings
) -> dict[str, Any]:
    row = await repo.require(raw_id)
    changes = body.model_dump(exclude_unset=True)
    active = {"active": changes.pop("active")} if "active" in changes else {}
    return webhook_out(
        await repo.change(row, {**_columns(row.provider, changes, settings), **active}), settings
    )


async def delete(repo: EspWebhookRepository, raw_id: str) -> dict[str, Any]:
    """Its URL answers 404 from now on; the events it took stay counted."""
    row = await repo.require(raw_id)
    await repo.delete(row)
    return {"id": str(row.id), "deleted": True}
