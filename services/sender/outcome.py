"""What an SMTP attempt means for the message (SPEC §2.5) and for its sending domain's health (SPEC §8). Pure:
codes in, a typed outcome out."""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass

from shared.reputation import Signal


class Kind(enum.StrEnum):
    SENT = "sent"
    BOUNCED = "bounced"  # permanent: 5xx for the recipient
    FAILED = "failed"  # temporary: 4xx, connection failure, timeout
    REJECTED = "rejected"  # a policy rejection (5.7.x, a spam block): the sending domain's problem
    DEFERRED = "deferred"  # the receiving provider asks us to slow down (421, 4.7.x): no try is spent


class Fault(enum.StrEnum):
    """Where a failure lies when the server never got to judge the e-mail."""

    CONNECTION = "connection"  # no SMTP session, or it dropped
    AUTHENTICATION = "authentication"  # the server refused our login


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    reason: str = ""
    smtp_code: int | None = None
    enhanced_code: str | None = None
    retryable: bool = True  # only meaningful for FAILED: a template that cannot render never will
    fault: Fault | None = None  # only for FAILED


_ENHANCED = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


# What receivers say behind a bare 550/554 when they refuse the sender, not the recipient: spam filters,
# block lists, reputation and policy checks, an unauthorised sender. Mailbox troubles ("user unknown",
# "mailbox unavailable", "over quota") say none of these.
SPAM_BLOCK = re.compile(
    r"spam|junk|\bblock(ed|ing)?\b|(black|block|deny)[ -]?list|\b(dns)?rbl\b|spamhaus|spamcop|barracuda"
    r"|policy|reputation|(not|un)[ -]?authori[sz]ed|poor sender|sender score",
    re.IGNORECASE,
)


def _policy_rejection(code: int, enhanced: str | None, text: str) -> bool:
    """A 5.7.x answer (security or policy status, RFC 3463), or a spam block behind a bare 550/554. An
    enhanced code of another class (5.1.x address, 5.2.x mailbox, 5.5.x protocol …) is a bounce whatever the
    text."""
    if enhanced is not None and enhanced != "5.0.0":
        return enhanced.startswith("5.7.")
    return code in (550, 554) and SPAM_BLOCK.search(text) is not None


def from_reply(code: int, text: str, for_recipient: bool = True) -> Outcome:
    """`for_recipient`: the reply to RCPT or DATA. A 5xx before them (login, MAIL FROM, a server that wants
    STARTTLS) is about our account, not the lead's address: a failure, never a bounce. A policy rejection of
    RCPT or DATA is not the lead's either: it is `REJECTED`, the message planned again. A 421 (service not
    available: closing) or a 4xx with a 4.7.x status (policy: rate limits, greylisting), at any step, is a
    deferral (SPEC §8)."""
    enhanced = match.group(1) if (match := _ENHANCED.search(text)) else None
    reason = f"{code} {text}".strip()[:1000]
    if 200 <= code < 300:
        return Outcome(Kind.SENT, "", code, enhanced)
    if code == 421 or (400 <= code < 500 and enhanced is not None and enhanced.startswith("4.7.")):
        return Outcome(Kind.DEFERRED, reason, code, enhanced)
    if 500 <= code < 600 and for_recipient:
        kind = Kind.REJECTED if _policy_rejection(code, enhanced, text) else Kind.BOUNCED
        return Outcome(kind, reason, code, enhanced)
    return Outcome(Kind.FAILED, reason, code, enhanced)


def from_transport_error(description: str) -> Outcome:
    return Outcome(Kind.FAILED, description[:1000] or "connection failed", fault=Fault.CONNECTION)


def from_login_refusal(code: int, text: str) -> Outcome:
    """The server refused our login: our account's failure, retried like any other."""
    return dataclasses.replace(from_reply(code, text, for_recipient=False), fault=Fault.AUTHENTICATION)


_SIGNALS = {
    Kind.SENT: Signal.SENT,
    Kind.BOUNCED: Signal.HARD_BOUNCE,
    Kind.REJECTED: Signal.POLICY_REJECTION,
    Kind.DEFERRED: Signal.DEFERRAL,
}
_FAULTS = {Fault.CONNECTION: Signal.CONNECTION_FAILURE, Fault.AUTHENTICATION: Signal.AUTHENTICATION_FAILURE}


def health_signal(outcome: Outcome) -> Signal | None:
    """What the attempt says about its sending domain (`shared.reputation`); None: nothing (the e-mail could
    not be made, or the attempt never reached a server for a reason of ours)."""
    if outcome.fault is not None:
        return _FAULTS[outcome.fault]
    if outcome.kind in _SIGNALS:
        return _SIGNALS[outcome.kind]
    return Signal.ANSWERED if outcome.smtp_code is not None else None
