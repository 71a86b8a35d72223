"""Amazon SES events through Amazon SNS: the SNS message, its signature, and the SES event it carries. Pure
(the signing certificate is fetched by `services.tracker.esp.sns`).

SNS signs the message's own fields, each as `<name>\\n<value>\\n` in a fixed order, with RSA: SHA1 for
SignatureVersion 1, SHA256 for 2. Its `Message` is the SES event, as JSON: a `Bounce` (Permanent: hard;
Transient or Undetermined: soft), a `Complaint` or a `Delivery`, named `notificationType` by an identity's
notifications and `eventType` by a configuration set's event publishing. Every SES event has `mail`, with the
headers of the e-mail: our `X-Maildash-Message` and Message-ID.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, Field, TypeAdapter, model_validator

from services.tracker.esp.common import (
    EVENT_ID_MAX,
    Kind,
    Reported,
    enhanced_status,
    malformed,
    message_ids,
    our_id,
    read,
    text,
    unauthorized,
)
from shared.esp import MESSAGE_HEADER

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
URL_MAX = 2048


class SnsMessage(BaseModel):
    """An SNS message as SNS posts it to an HTTPS subscriber (with `Content-Type: text/plain`)."""

    Type: Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]
    MessageId: str = Field(min_length=1, max_length=EVENT_ID_MAX)
    TopicArn: str = Field(min_length=1, max_length=400)
    Message: str
    Subject: str | None = Field(None, max_length=200)
    Timestamp: str = Field(max_length=40)  # signed as it is written: kept as text
    SignatureVersion: Literal["1", "2"]
    Signature: str = Field(max_length=2048)
    SigningCertURL: str = Field(max_length=URL_MAX)
    SubscribeURL: str | None = Field(None, max_length=URL_MAX)
    Token: str | None = Field(None, max_length=2048)

    @model_validator(mode="after")
    def _confirmations_say_where(self) -> SnsMessage:
        if self.Type != "Notification" and (self.SubscribeURL is None or self.Token is None):
            raise ValueError(f"a {self.Type} has a SubscribeURL and a Token")
        return self

    @property
    def timestamp(self) -> datetime:
        try:
            moment = datetime.fromisoformat(self.Timestamp)
        except ValueError as error:
            raise malformed("its Timestamp is not an ISO 8601 time") from error
        if moment.tzinfo is None:
            raise malformed("its Timestamp has no time zone")
        return moment


SNS_MESSAGE = TypeAdapter(SnsMessage)


def sns_message(body: bytes) -> SnsMessage:
    return read(body, SNS_MESSAGE, "the SNS message")


def string_to_sign(message: SnsMessage) -> bytes:
    names = NOTIFICATION_FIELDS if message.Type == "Notification" else CONFIRMATION_FIELDS
    fields = message.model_dump()
    return "".join(f"{name}\n{fields[name]}\n" for name in names if fields[name] is not None).encode()


def verify(message: SnsMessage, signer: rsa.RSAPublicKey) -> None:
    """Raises Refused (401) unless `signer` (the key of the message's SigningCertURL) signed it."""
    algorithm: hashes.HashAlgorithm = hashes.SHA1() if message.SignatureVersion == "1" else hashes.SHA256()  # noqa: S303 -- SNS's SignatureVersion 1 is SHA1
    try:
        signature = base64.b64decode(message.Signature, validate=True)
        signer.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
    except (InvalidSignature, binascii.Error, ValueError) as error:
        raise unauthorized("the SNS signature does not verify") from error


class _Header(BaseModel):
    name: str = Field(max_length=200)
    value: str


class _CommonHeaders(BaseModel):
    messageId: str | None = Field(None, max_length=1000)


class _Mail(BaseModel):
    messageId: str = Field(max_length=EVENT_ID_MAX)  # SES's own
    headers: list[_Header] = Field(default_factory=list, max_length=500)
    commonHeaders: _CommonHeaders = Field(default_factory=_CommonHeaders)

    def names(self) -> tuple[Any, ...]:
        headers = {header.name.lower(): header.value for header in self.headers}
        ours = our_id(headers.get(MESSAGE_HEADER.lower()))
        return tuple(
            dict.fromkeys([*ours, *message_ids(self.commonHeaders.messageId, headers.get("message-id"))])
        )


class _Recipient(BaseModel):
    emailAddress: str = Field(max_length=1000)
    status: str | None = Field(None, max_length=100)
    diagnosticCode: str | None = None


class _Bounce(BaseModel):
    bounceType: Literal["Permanent", "Transient", "Undetermined"]
    bounceSubType: str = Field("", max_length=100)
    bouncedRecipients: list[_Recipient] = Field(min_length=1, max_length=100)
    feedbackId: str | None = Field(None, max_length=EVENT_ID_MAX)


class _Complained(BaseModel):
    emailAddress: str = Field(max_length=1000)


class _Complaint(BaseModel):
    complainedRecipients: list[_Complained] = Field(min_length=1, max_length=100)
    complaintFeedbackType: str | None = Field(None, max_length=100)
    feedbackId: str | None = Field(None, max_length=EVENT_ID_MAX)


class _Delivery(BaseModel):
    recipients: list[str] = Field(min_length=1, max_length=100)
    smtpResponse: str = ""


class SesEvent(BaseModel):
    notificationType: str | None = Field(None, max_length=50)
    eventType: str | None = Field(None, max_length=50)
    mail: _Mail
    bounce: _Bounce | None = None
    complaint: _Complaint | None = None
    delivery: _Delivery | None = None

    @property
    def kind(self) -> str:
        return self.notificationType or self.eventType or ""

    @model_validator(mode="after")
    def _carries_its_kind(self) -> SesEvent:
        if not self.kind:
            raise ValueError("neither notificationType nor eventType")
        if self.kind in ("Bounce", "Complaint", "Delivery") and getattr(self, self.kind.lower()) is None:
            raise ValueError(f"a {self.kind} event without its {self.kind.lower()} object")
        return self


SES_EVENT = TypeAdapter(SesEvent)


def ses_event(message: SnsMessage) -> Reported:
    """The SES event an SNS notification carries. Its id: SES's feedback id of a bounce or complaint (the same
    when one reaches us through two topics), else the SNS message's."""
    event = read(message.Message, SES_EVENT, "the SES event")
    names = event.mail.names()
    if event.kind == "Bounce" and event.bounce is not None:
        bounce, bounced = event.bounce, event.bounce.bouncedRecipients[0]
        kind: Kind = "hard_bounce" if bounce.bounceType == "Permanent" else "soft_bounce"
        diagnostic = bounced.diagnosticCode or f"{bounce.bounceType} {bounce.bounceSubType}"
        return Reported(
            bounce.feedbackId or message.MessageId, kind, names, text(bounced.emailAddress, 320),
            enhanced_status(bounced.status or "", diagnostic), text(diagnostic),
        )  # fmt: skip
    if event.kind == "Complaint" and event.complaint is not None:
        complaint = event.complaint
        return Reported(
            complaint.feedbackId or message.MessageId, "complaint", names,
            text(complaint.complainedRecipients[0].emailAddress, 320),
            feedback_type=text(complaint.complaintFeedbackType, 50) or None,
        )  # fmt: skip
    if event.kind == "Delivery" and event.delivery is not None:
        delivery = event.delivery
        recipient = text(delivery.recipients[0], 320)
        return Reported(
            message.MessageId, "delivery", names, recipient, diagnostic=text(delivery.smtpResponse)
        )
    return Reported(message.MessageId, "unrelated", names)
