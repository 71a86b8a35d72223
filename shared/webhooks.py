"""Outgoing webhooks, the pure part: which events a workspace may hear, how a delivery is signed (Standard
Webhooks, https://www.standardwebhooks.com), and when a failed one is tried again or given up.

Signing: `webhook-signature` is `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")),
where the secret is `whsec_` + base64(key). `webhook-id` is the event's id, the same on every attempt, so a
receiver can drop a repeat (delivery is at least once).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared import events

# The events an endpoint may subscribe to (SPEC §8): the dotted names are their routing keys.
WEBHOOK_EVENTS: tuple[type[events.Event], ...] = (
    events.MessageSent,
    events.MessageBounced,
    events.MessageOpened,
    events.MessageClicked,
    events.LeadReplied,
    events.LeadUnsubscribed,
    events.LeadComplained,
    events.CampaignStarted,
    events.CampaignPaused,
    events.CampaignCompleted,
    events.DomainPaused,
    events.DomainResumed,
)
EVENT_TYPES: tuple[str, ...] = tuple(event.routing_key for event in WEBHOOK_EVENTS)

SECRET_PREFIX = "whsec_"  # noqa: S105 -- the format's prefix, not a secret
SECRET_MIN_BYTES = 24  # the spec asks for 24 to 64 random bytes
SECRET_MAX_BYTES = 64


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret; ValueError (saying why) for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as error:
        raise ValueError(f"a signing secret is {SECRET_PREFIX} and base64") from error
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(f"a signing secret holds {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes")
    return key


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }


def body(event_type: str, payload: dict[str, Any]) -> bytes:
    """The spec's payload shape: `type`, `timestamp` (when it happened) and the event as `data`."""
    wrapped = {"type": event_type, "timestamp": payload.get("occurred_at"), "data": payload}
    return json.dumps(wrapped, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class RetryRules:
    first_seconds: float = 5.0  # after the first failure
    max_seconds: float = 8 * 3600.0  # the delay doubles up to this
    give_up_seconds: float = 3 * 86400.0  # counted from the first attempt

    def delay(self, failures: int) -> timedelta:
        """The wait after the `failures`-th failure in a row (1: the first)."""
        exponent = min(failures - 1, 62)  # 2**62 seconds is past any cap; keeps the float finite
        return timedelta(seconds=min(self.first_seconds * 2.0**exponent, self.max_seconds))

    def next_attempt(self, first_attempt_at: datetime, failures: int, now: datetime) -> datetime | None:
        """When to try again after a failure at `now`; None: give up (the next try would come later than
        `give_up_seconds` after the first)."""
        retry_at = now + self.delay(failures)
        if retry_at - first_attempt_at > timedelta(seconds=self.give_up_seconds):
            return None
        return retry_at


def succeeded(status_code: int) -> bool:
    """Any 2xx is taken; everything else (3xx included: redirects are not followed) is tried again."""
    return 200 <= status_code < 300
