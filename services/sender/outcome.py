"""What an SMTP attempt means for the message (SPEC §2.5). Pure: codes in, a typed outcome out."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Kind(enum.StrEnum):
    SENT = "sent"
    BOUNCED = "bounced"  # permanent: 5xx for the recipient
    FAILED = "failed"  # temporary: 4xx, connection failure, timeout
    DEFERRED = "deferred"  # the receiving provider asks us to slow down (421, 4.7.x): no try is spent


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    reason: str = ""
    smtp_code: int | None = None
    enhanced_code: str | None = None
    retryable: bool = True  # only meaningful for FAILED: a template that cannot render never will


_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def from_reply(code: int, text: str, for_recipient: bool = True) -> Outcome:
    """`for_recipient`: the reply to RCPT or DATA. A 5xx before them (login, MAIL FROM, a server that wants
    STARTTLS) is about our account, not the lead's address: a failure, never a bounce. A 421 (service not
    available: closing) or a 4xx with a 4.7.x status (policy: rate limits, greylisting), at any step, is a
    deferral (SPEC §8)."""
    enhanced = match.group(1) if (match := _ENHANCED.search(text)) else None
    reason = f"{code} {text}".strip()[:1000]
    if 200 <= code < 300:
        return Outcome(Kind.SENT, "", code, enhanced)
    if code == 421 or (400 <= code < 500 and enhanced is not None and enhanced.startswith("4.7.")):
        return Outcome(Kind.DEFERRED, reason, code, enhanced)
    if 500 <= code < 600 and for_recipient:
        return Outcome(Kind.BOUNCED, reason, code, enhanced)
    return Outcome(Kind.FAILED, reason, code, enhanced)


def from_transport_error(description: str) -> Outcome:
    return Outcome(Kind.FAILED, description[:1000] or "connection failed")
