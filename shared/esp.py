"""The ESPs whose event webhooks the tracker takes, and what our e-mail carries so that their events name our
message. Pure.

Every e-mail names its message in `X-Maildash-Message`: Amazon SES returns a message's headers in its
events. SendGrid and Mailgun return the Message-ID we set (`smtp-id`, `message-id`), but SendGrid's spam
reports carry only the custom arguments its SMTP server reads from `X-SMTPAPI`; Postmark returns no header at
all, only the metadata its SMTP server reads from `X-PM-Metadata-<key>`. Both servers strip those headers, so
mail relayed through them carries our message id there too, and mail relayed anywhere else does not.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

Provider = Literal["ses", "postmark", "sendgrid", "mailgun"]
PROVIDERS: tuple[Provider, ...] = ("ses", "postmark", "sendgrid", "mailgun")

MESSAGE_HEADER = "X-Maildash-Message"
# The key of our message id in Postmark's metadata and in SendGrid's custom arguments.
MESSAGE_KEY = "maildash-message"
POSTMARK_RELAY = re.compile(r"(^|\.)postmarkapp\.com\.?\Z", re.IGNORECASE)
SENDGRID_RELAY = re.compile(r"(^|\.)sendgrid\.net\.?\Z", re.IGNORECASE)

# An SNS topic: arn:<partition>:sns:<region>:<account>:<name> (names are at most 256 characters).
TOPIC_ARN = re.compile(r"arn:aws(-cn|-us-gov)?:sns:[a-z0-9-]{1,30}:\d{12}:[A-Za-z0-9_.-]{1,256}\Z")


def tagging_headers(smtp_host: str, message_id: str) -> list[tuple[str, str]]:
    """The headers that name message `message_id` to the ESP behind `smtp_host`."""
    headers = [(MESSAGE_HEADER, message_id)]
    if POSTMARK_RELAY.search(smtp_host):
        headers.append((f"X-PM-Metadata-{MESSAGE_KEY}", message_id))
    if SENDGRID_RELAY.search(smtp_host):
        headers.append(
            ("X-SMTPAPI", json.dumps({"unique_args": {MESSAGE_KEY: message_id}}, separators=(",", ":")))
        )
    return headers


def sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key SendGrid shows for its signed Event Webhook: base64 of the DER public key (a PEM
    block is taken too). ValueError for anything that is not a P-256 public key."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error) as error:
        raise ValueError("not a public key: give the verification key SendGrid shows") from error
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an ECDSA P-256 public key, which SendGrid signs with")
    return key
