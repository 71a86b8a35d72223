"""Reading inbound mail: delivery status notifications (bounces) and replies. Pure: bytes in, facts out.

A DSN (RFC 3464) names its message by our VERP return path (`bounce+<message id>@domain`, the address the
bounce was sent to) or by the original `Message-ID` inside it; its `Status` field says hard (5.x.x) or soft
(4.x.x). Bounces in older, non-standard shapes are read by flufl.bounce. A reply names what it answers in
`In-Reply-To` / `References`; a mail to `unsubscribe+<token>@domain` is the List-Unsubscribe mailto.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message

from flufl.bounce import all_failures

VERP = re.compile(r"bounce\+([0-9a-f]{32})@", re.IGNORECASE)
UNSUBSCRIBE = re.compile(r"unsubscribe\+([A-Za-z0-9_.=-]+)@", re.IGNORECASE)
ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")
# Where a bounce or an inbound mail carries the address it was delivered to.
RECIPIENT_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "Cc")


class NotUnderstood(ValueError):
    """The mail cannot be used; the reason says why. Nothing is recorded."""


@dataclass(frozen=True)
class Bounce:
    message_id: uuid.UUID | None  # from the VERP address
    original_ids: tuple[str, ...]  # Message-IDs quoted from the original
    permanent: bool
    status: str | None  # the enhanced status code, e.g. 5.1.1
    recipient: str | None
    diagnostic: str


@dataclass(frozen=True)
class Reply:
    references: tuple[str, ...]  # In-Reply-To first, then References from newest to oldest
    unsubscribe_token: str | None
    sender: str
    automatic: bool  # an out-of-office or other auto-reply: not a person answering


def _parse(raw: bytes) -> Message:
    if not raw.strip():
        raise NotUnderstood("the body is empty; send the raw e-mail")
    mail = message_from_bytes(raw, policy=policy.compat32)
    if not mail.keys():
        raise NotUnderstood("the body is not an e-mail (no headers)")
    return mail


def _addresses(mail: Message, envelope_recipient: str | None) -> list[str]:
    found = [envelope_recipient] if envelope_recipient else []
    found += [str(value) for name in RECIPIENT_HEADERS for value in mail.get_all(name, [])]
    return found


def _verp(addresses: list[str]) -> uuid.UUID | None:
    for address in addresses:
        if match := VERP.search(address):
            return uuid.UUID(match.group(1))
    return None


def _status_blocks(mail: Message) -> list[Message]:
    """The per-recipient field blocks of a message/delivery-status part."""
    blocks: list[Message] = []
    for part in mail.walk():
        if part.get_content_type() == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                blocks += [
                    b for b in payload if isinstance(b, Message) and (b.get("Action") or b.get("Status"))
                ]
    return blocks


def _bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _original_ids(mail: Message) -> tuple[str, ...]:
    """Message-IDs of the original, from an attached message or its attached headers."""
    ids: list[str] = []
    for part in mail.walk():
        kind = part.get_content_type()
        payload = part.get_payload()
        if kind == "message/rfc822" and isinstance(payload, list):
            for inner in payload:
                if isinstance(inner, Message):
                    ids += MESSAGE_ID.findall(str(inner.get("Message-ID", "")))
        elif kind == "text/rfc822-headers":
            headers = message_from_bytes(_bytes(part), policy=policy.compat32)
            ids += MESSAGE_ID.findall(str(headers.get("Message-ID", "")))
    if not ids:  # a plain-text bounce quoting the original's headers
        for part in mail.walk():
            if part.get_content_maintype() == "text":
                text = _bytes(part).decode("utf-8", "replace")
                for line in re.findall(r"^\s*Message-ID:\s*(.+)$", text, re.IGNORECASE | re.MULTILINE):
                    ids += MESSAGE_ID.findall(line)
    return tuple(dict.fromkeys(ids))


def _recipient(field: object) -> str | None:
    """`rfc822; jan@example.com` → `jan@example.com`. (A field with 8-bit bytes comes as a `Header`.)"""
    return str(field or "").split(";", 1)[-1].strip() or None


def read_bounce(raw: bytes, envelope_recipient: str | None = None) -> Bounce:
    mail = _parse(raw)
    message_id = _verp(_addresses(mail, envelope_recipient))
    original_ids = _original_ids(mail)
    blocks = _status_blocks(mail)
    failed = [b for b in blocks if str(b.get("Action", "")).strip().lower() in ("failed", "delayed")]
    if failed or blocks:
        block = (failed or blocks)[0]
        status_match = ENHANCED.search(str(block.get("Status", "")))
        action = str(block.get("Action", "")).strip().lower()
        if status_match is None and action not in ("failed", "delayed"):
            raise NotUnderstood("the delivery status reports no failure")
        status = status_match.group(0) if status_match else None
        permanent = status.startswith("5") if status else action == "failed"
        if status and status.startswith("2"):
            raise NotUnderstood(f"the delivery status {status} is a success, not a bounce")
        recipient = _recipient(block.get("Final-Recipient")) or _recipient(block.get("Original-Recipient"))
        diagnostic = str(block.get("Diagnostic-Code", "")).split(";", 1)[-1].strip()
    else:
        try:
            temporary, permanent_set = all_failures(mail)
        except Exception as error:  # some of its detectors trip over unusual mail (no From, say)
            raise NotUnderstood(f"not readable as a bounce ({type(error).__name__})") from error
        if not temporary and not permanent_set:
            raise NotUnderstood("no delivery failure found in it: not a bounce")
        permanent = bool(permanent_set)
        addresses = permanent_set or temporary
        recipient = sorted(addresses)[0].decode("utf-8", "replace") if addresses else None
        # The notification's text, decoded leniently: a mangled charset must not stop the reading.
        first_part = mail.get_payload(0) if mail.is_multipart() else mail
        parts = list(first_part.walk()) if isinstance(first_part, Message) else []
        text = " ".join(_bytes(part).decode("utf-8", "replace") for part in parts)
        status_match = ENHANCED.search(text)
        status = status_match.group(0) if status_match and status_match.group(1) != "2" else None
        diagnostic = str(mail.get("Subject", ""))
    if message_id is None and not original_ids:
        raise NotUnderstood("it names no message: neither a VERP address nor the original Message-ID")
    return Bounce(message_id, original_ids, permanent, status, recipient, diagnostic[:1000])


def _is_automatic(mail: Message) -> bool:
    """RFC 3834 `Auto-Submitted`, and the headers vacation responders use in practice."""
    auto = str(mail.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(mail.get("Precedence", "")).strip().lower()
    return (
        auto != "no"
        or precedence in ("auto_reply", "bulk", "junk", "list")
        or any(mail.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"))
    )


def read_reply(raw: bytes, envelope_recipient: str | None = None) -> Reply:
    mail = _parse(raw)
    token = None
    for address in _addresses(mail, envelope_recipient):
        if match := UNSUBSCRIBE.search(address):
            token = match.group(1)
            break
    references = MESSAGE_ID.findall(str(mail.get("In-Reply-To", "")))
    references += reversed(MESSAGE_ID.findall(str(mail.get("References", ""))))
    if token is None and not references:
        raise NotUnderstood("it answers no message: no In-Reply-To or References, and no unsubscribe address")
    return Reply(tuple(dict.fromkeys(references)), token, str(mail.get("From", "")), _is_automatic(mail))
