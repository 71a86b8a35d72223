"""SendGrid's signed Event Webhook. Pure.

SendGrid signs the timestamp header followed by the raw body with ECDSA (P-256, SHA-256) and sends the
signature, base64 of its DER form, in `X-Twilio-Email-Event-Webhook-Signature`; the key to check it with is
the one SendGrid shows when signing is turned on. The body is a JSON array of events: `bounce` (of `type`
`bounce`: hard; `blocked`, a temporary refusal: soft), `deferred` (soft), `spamreport` (a complaint),
`delivered`, and others we do not use. Each has `sg_event_id`; most have `smtp-id`, the Message-ID we set,
and all have the custom arguments we set in `X-SMTPAPI` as their own fields.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from services.tracker.esp.common import (
    EVENT_ID_MAX,
    Kind,
    Reported,
    enhanced_status,
    fresh,
    message_ids,
    our_id,
    read,
    text,
    unauthorized,
)
from shared.esp import MESSAGE_KEY

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
KINDS: dict[str, Kind] = {"deferred": "soft_bounce", "spamreport": "complaint", "delivered": "delivery"}


def verify(
    key: ec.EllipticCurvePublicKey, headers: Mapping[str, str], body: bytes, now: datetime, max_age: timedelta
) -> None:
    """Raises Refused: 401 unless the headers sign this body with `key` at a time within `max_age` of now."""
    signature, timestamp = headers.get(SIGNATURE_HEADER, ""), headers.get(TIMESTAMP_HEADER, "")
    if not signature or not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise unauthorized(f"the {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} headers are missing or malformed")
    try:
        key.verify(
            base64.b64decode(signature, validate=True), timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, binascii.Error, ValueError) as error:
        raise unauthorized("the SendGrid signature does not verify") from error
    fresh(datetime.fromtimestamp(int(timestamp), UTC), now, max_age)


class SendGridEvent(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    event: str = Field(max_length=50)
    sg_event_id: str = Field(min_length=1, max_length=EVENT_ID_MAX)
    email: str = Field("", max_length=1000)
    smtp_id: str | None = Field(None, alias="smtp-id", max_length=1000)
    ours: str | None = Field(None, alias=MESSAGE_KEY, max_length=100)
    type: str | None = Field(None, max_length=50)
    status: str | None = Field(None, max_length=100)
    reason: str | None = None
    response: str | None = None

    @property
    def kind(self) -> Kind:
        if self.event == "bounce":
            temporary = self.type == "blocked" or (self.status or "").startswith("4")
            return "soft_bounce" if temporary else "hard_bounce"
        return KINDS.get(self.event, "unrelated")


BATCH = TypeAdapter(list[SendGridEvent])


def events(body: bytes) -> list[Reported]:
    batch = read(body, BATCH, "the SendGrid events")
    reported = []
    for event in batch:
        diagnostic = text(event.reason or event.response)
        reported.append(
            Reported(
                event.sg_event_id, event.kind, (*our_id(event.ours), *message_ids(event.smtp_id)),
                text(event.email, 320), enhanced_status(event.status or "", diagnostic), diagnostic,
            )
        )  # fmt: skip
    return reported
