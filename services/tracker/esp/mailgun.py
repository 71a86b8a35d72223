"""Mailgun's webhooks. Pure.

Each request is one event, JSON `{"signature": {"timestamp", "token", "signature"}, "event-data": {…}}`, where
`signature` is the hex HMAC-SHA256 of timestamp and token under the account's webhook signing key. It signs
nothing of the event itself, so a token is taken once (Mailgun's own advice): `Verified.once`. Events:
`failed` (`severity` permanent: hard; temporary: soft), `complained`, `delivered`, and others we do not use;
each has its `id`, and the e-mail's headers with the Message-ID we set.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from services.tracker.esp.common import (
    EVENT_ID_MAX,
    Kind,
    Reported,
    enhanced_status,
    fresh,
    message_ids,
    read,
    text,
    unauthorized,
)


class _Signature(BaseModel):
    timestamp: str = Field(pattern=r"^\d{1,12}$")
    token: str = Field(min_length=1, max_length=200)
    signature: str = Field(max_length=200)


class _DeliveryStatus(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    code: int | str | None = None
    enhanced_code: str | None = Field(None, alias="enhanced-code", max_length=20)
    message: str | None = None
    description: str | None = None


class _Message(BaseModel):
    headers: dict[str, str | None] = Field(default_factory=dict, max_length=100)


class _EventData(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    event: str = Field(max_length=50)
    id: str = Field(min_length=1, max_length=EVENT_ID_MAX)
    recipient: str = Field("", max_length=1000)
    severity: str | None = Field(None, max_length=20)
    delivery_status: _DeliveryStatus = Field(default_factory=_DeliveryStatus, alias="delivery-status")
    message: _Message = Field(default_factory=_Message)

    @property
    def kind(self) -> Kind:
        if self.event == "failed":
            return "hard_bounce" if self.severity == "permanent" else "soft_bounce"
        return KINDS.get(self.event, "unrelated")


KINDS: dict[str, Kind] = {"complained": "complaint", "delivered": "delivery"}


class MailgunPost(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    signature: _Signature
    event_data: _EventData = Field(alias="event-data")


POST = TypeAdapter(MailgunPost)


def post(body: bytes) -> MailgunPost:
    return read(body, POST, "the Mailgun webhook")


def verify(signing_key: str, signed: MailgunPost, now: datetime, max_age: timedelta) -> None:
    """Raises Refused: 401 unless the signature is the key's for its timestamp and token, made within
    `max_age` of now."""
    stamp = signed.signature
    expected = hmac.new(signing_key.encode(), (stamp.timestamp + stamp.token).encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest().encode(), stamp.signature.lower().encode()):
        raise unauthorized("the Mailgun signature does not verify")
    fresh(datetime.fromtimestamp(int(stamp.timestamp), UTC), now, max_age)


def event(signed: MailgunPost) -> Reported:
    data, status = signed.event_data, signed.event_data.delivery_status
    diagnostic = text(status.description or status.message)
    headers = {name.lower(): value for name, value in data.message.headers.items()}
    code = enhanced_status(status.enhanced_code or "", status.message or "", status.description or "")
    names = tuple(message_ids(headers.get("message-id")))
    return Reported(data.id, data.kind, names, text(data.recipient, 320), code, diagnostic)
