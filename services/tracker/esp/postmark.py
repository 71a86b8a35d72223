"""Postmark's webhooks. Pure.

Postmark signs nothing: its webhook URL carries HTTP basic auth (`https://user:password@…`), which arrives
as the `Authorization` header. Each request is one event, by its `RecordType`: `Bounce` (of `Type`
HardBounce or BadEmailAddress: hard; Transient, SoftBounce, DnsError, Blocked or DMARCPolicy: soft; others,
such as AutoResponder, we do not use), `SpamComplaint`, `Delivery`, and others (Open, Click, …). Postmark
returns none of the e-mail's headers, only the metadata its SMTP server took from `X-PM-Metadata-*` headers:
our message id (`shared.esp.tagging_headers`). No signed time either: an event is judged by its own time
(`BouncedAt`, `DeliveredAt`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, Field, TypeAdapter, model_validator

from services.tracker.esp.common import (
    EVENT_ID_MAX,
    Kind,
    Reported,
    enhanced_status,
    fresh,
    our_id,
    read,
    text,
    unauthorized,
)
from shared.esp import MESSAGE_KEY

HARD = frozenset({"HardBounce", "BadEmailAddress"})
SOFT = frozenset({"Transient", "SoftBounce", "DnsError", "Blocked", "DMARCPolicy"})


def verify(username: str, password: str, authorization: str) -> None:
    """Raises Refused (401) unless `authorization` is HTTP basic auth with this user and password."""
    scheme, _, credentials = authorization.partition(" ")
    try:
        given = base64.b64decode(credentials.strip(), validate=True)
    except (binascii.Error, ValueError) as error:
        raise unauthorized("no basic auth in the webhook URL") from error
    user, _, secret = given.partition(b":")
    same_user = hmac.compare_digest(user, username.encode())
    same_password = hmac.compare_digest(secret, password.encode())
    if scheme.lower() != "basic" or not (same_user and same_password):
        raise unauthorized("wrong or missing basic auth in the webhook URL")


class PostmarkEvent(BaseModel):
    RecordType: str = Field(max_length=50)
    ID: int | None = None
    Type: str | None = Field(None, max_length=50)
    MessageID: str | None = Field(None, max_length=EVENT_ID_MAX)
    Email: str | None = Field(None, max_length=1000)
    Recipient: str | None = Field(None, max_length=1000)
    BouncedAt: AwareDatetime | None = None
    DeliveredAt: AwareDatetime | None = None
    Description: str | None = None
    Details: str | None = None
    Metadata: dict[str, Any] = Field(default_factory=dict, max_length=100)

    @property
    def kind(self) -> Kind:
        if self.RecordType == "SpamComplaint":
            return "complaint"
        if self.RecordType == "Delivery":
            return "delivery"
        if self.RecordType == "Bounce":
            return "hard_bounce" if self.Type in HARD else "soft_bounce" if self.Type in SOFT else "unrelated"
        return "unrelated"

    @model_validator(mode="after")
    def _identified_and_dated(self) -> PostmarkEvent:
        if self.RecordType in ("Bounce", "SpamComplaint") and (self.ID is None or self.BouncedAt is None):
            raise ValueError(f"a {self.RecordType} has an ID and BouncedAt")
        if self.RecordType == "Delivery" and (self.MessageID is None or self.DeliveredAt is None):
            raise ValueError("a Delivery has a MessageID and DeliveredAt")
        return self


EVENT = TypeAdapter(PostmarkEvent)


def event(body: bytes, now: datetime, max_age: timedelta) -> Reported:
    """Raises Refused: 422 for what is no Postmark event, 401 for one dated more than `max_age` from now."""
    found = read(body, EVENT, "the Postmark event")
    occurred = found.BouncedAt or found.DeliveredAt
    if occurred is not None:
        fresh(occurred, now, max_age)
    event_id = (
        f"{found.RecordType}:{found.MessageID}:{found.Recipient}"
        if found.RecordType == "Delivery"
        else f"{found.RecordType}:{found.ID if found.ID is not None else found.MessageID}"
    )
    diagnostic = text(found.Details or found.Description)
    return Reported(
        event_id[:EVENT_ID_MAX], found.kind, tuple(our_id(found.Metadata.get(MESSAGE_KEY))),
        text(found.Email or found.Recipient, 320), enhanced_status(diagnostic), diagnostic,
    )  # fmt: skip
