"""HMAC-signed tokens naming a message (pixel, click, unsubscribe).

A token is `base64url(payload).base64url(hmac_sha256(purpose|payload))`. The purpose is bound into the MAC so
an open token can never be replayed as an unsubscribe token.
"""

from __future__ import annotations

import base64
import hmac
import uuid
from typing import Literal

Purpose = Literal["open", "click", "unsubscribe"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:  # only the canonical spelling: no two tokens verify for one payload
        raise ValueError("non-canonical base64")
    return raw


def _mac(secret: str, purpose: Purpose, payload: bytes) -> bytes:
    return hmac.digest(secret.encode(), purpose.encode() + b"|" + payload, "sha256")[:16]


def sign(secret: str, purpose: Purpose, payload: str) -> str:
    raw = payload.encode()
    return f"{_b64(raw)}.{_b64(_mac(secret, purpose, raw))}"


def verify(secret: str, purpose: Purpose, token: str) -> str | None:
    """The payload when the token is genuine for this purpose, else None (never raises on bad input)."""
    try:
        body, mac = token.split(".", 1)
        raw = _unb64(body)
        ok = hmac.compare_digest(_unb64(mac), _mac(secret, purpose, raw))
        return raw.decode() if ok else None
    except (ValueError, UnicodeDecodeError):
        return None


def _message_payload(message_id: str, extra: str) -> str | None:
    try:
        compact = uuid.UUID(message_id).hex  # short tokens keep List-Unsubscribe on one header line
    except ValueError:
        return None
    return f"{compact}\n{extra}" if extra else compact


def sign_message(secret: str, purpose: Purpose, message_id: str, extra: str = "") -> str:
    """A token for a message id (and, for clicks, the exact URL it may redirect to)."""
    payload = _message_payload(message_id, extra)
    if payload is None:
        raise ValueError(f"not a message id: {message_id!r}")
    return sign(secret, purpose, payload)


def verify_message(secret: str, purpose: Purpose, token: str, message_id: str, extra: str = "") -> bool:
    """Whether the token is the one `sign_message` gives for this message (and extra): a token has one
    spelling only, so signing again and comparing is the whole check."""
    payload = _message_payload(message_id, extra)
    if payload is None or not token.isascii():  # compare_digest takes ASCII text only
        return False
    return hmac.compare_digest(token, sign(secret, purpose, payload))


def message_of(secret: str, purpose: Purpose, token: str) -> str | None:
    """The message id a token names (for tokens that stand alone, like unsubscribe links)."""
    payload = verify(secret, purpose, token)
    if payload is None or "\n" in payload:
        return None
    return str(uuid.UUID(payload))
