"""Bodies of the outgoing webhooks' routes. The signing secret is write-only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, HttpUrl

from services.api.kit.schemas import Patch, Strict
from shared import webhooks

EventType = Literal[
    "message.sent", "message.bounced", "message.opened", "message.clicked", "lead.replied",
    "lead.unsubscribed", "lead.complained", "campaign.started", "campaign.paused", "campaign.completed",
    "domain.paused", "domain.resumed",
]  # fmt: skip
assert set(EventType.__args__) == set(webhooks.EVENT_TYPES)  # type: ignore[attr-defined]


def signing_secret(value: str) -> str:
    webhooks.secret_key(value)  # raises ValueError, saying why
    return value


def no_credentials(value: HttpUrl) -> HttpUrl:
    if value.username or value.password:
        raise ValueError("a webhook URL carries no user or password: verify our signature instead")
    return value


Url = Annotated[HttpUrl, Field(max_length=2000), AfterValidator(no_credentials)]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(webhooks.EVENT_TYPES))]
Secret = Annotated[
    str,
    Field(min_length=10, max_length=100, description="`whsec_` + base64 of 24 to 64 random bytes"),
    AfterValidator(signing_secret),
]
Description = Annotated[str, Field(max_length=500)]


class WebhookEndpointIn(Strict):
    """Where to post the events of `event_types`, signed with `secret` (Standard Webhooks)."""

    url: Url
    event_types: EventTypes
    secret: Secret
    description: Description = ""
    enabled: bool = True


class WebhookEndpointPatch(Patch):
    """Only the fields sent change. `enabled: true` also clears the reason it was disabled for."""

    url: Url | None = None
    event_types: EventTypes | None = None
    secret: Secret | None = None
    description: Description | None = None
    enabled: bool | None = None


class WebhookEndpointOut(BaseModel):
    id: str
    url: str
    description: str
    event_types: list[EventType]
    enabled: bool
    disabled_reason: str | None  # why it was disabled (by hand: null)
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookDeliveryOut(BaseModel):
    id: str
    event_id: str  # the `webhook-id` header
    event_type: EventType
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None  # pending only
    delivered_at: datetime | None
    last_error: str | None
    payload: dict[str, Any]  # the event: the `data` of the body posted
    created_at: datetime


class WebhookAttemptOut(BaseModel):
    id: str
    delivery_id: str
    attempted_at: datetime
    status_code: int | None  # null: no answer (refused, timed out, not a public address …)
    succeeded: bool
    duration_ms: int
    error: str | None
    response: str | None  # the start of the receiver's answer
