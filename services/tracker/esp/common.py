"""What every ESP's webhook comes down to, and the bounds on reading one. Pure.

A request whose authentication holds becomes a list of `Reported` events: the provider's own event id, our
classification (SPEC §8: `hard_bounce`, `soft_bounce`, `complaint`; `delivery`; `unrelated` for what we do
not use, such as the opens and clicks an ESP tracks) and the names of our message the event carries. Any
request that is not that answers a `Refused` with its status, and nothing is recorded.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError

from services.tracker.inbound import ENHANCED, clean_text

T = TypeVar("T")
Kind = Literal["hard_bounce", "soft_bounce", "complaint", "delivery", "unrelated"]
# Ids are bounded (they are keys); free text (a diagnostic, a header's value) is bounded by the body's size
# and cut short when recorded, never refused: a genuine event must not fail on a long SMTP answer.
MAX_DEPTH = 16  # nesting of a JSON body: the deepest documented payload (SES in SNS) has 5 levels
EVENT_ID_MAX = 200


@dataclass(frozen=True)
class Reported:
    """One event of an ESP, read."""

    event_id: str
    kind: Kind
    names: tuple[uuid.UUID | str, ...]  # our message id, then Message-IDs (`repository.message_in_order`)
    recipient: str = ""
    status: str | None = None  # the enhanced status code of a bounce, e.g. 5.1.1
    diagnostic: str = ""
    feedback_type: str | None = None  # a complaint's kind, where the ESP says it (abuse, …)


class Refused(Exception):
    """The request is refused with `status` (and `code` for machines); nothing was recorded."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def unauthorized(why: str) -> Refused:
    return Refused(401, "unauthorized", why)


def malformed(why: str) -> Refused:
    return Refused(422, "malformed", why)


def fresh(at: datetime, now: datetime, max_age: timedelta) -> None:
    """An event dated more than `max_age` before (or after) now is a replay, or comes from a clock far off."""
    if abs(now - at) > max_age:
        raise Refused(
            401, "expired", f"the request is dated {at.isoformat()}, more than {max_age} from now: a replay?"
        )


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def parse_json(raw: bytes | str, what: str) -> Any:
    """JSON nested at most MAX_DEPTH levels. The depth is measured before the parse, at C speed: strings out,
    then everything but brackets, then each pass removes the innermost level of pairs."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as error:
        raise malformed(f"{what} is not UTF-8") from error
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(MAX_DEPTH):
        if not brackets:
            break
        brackets = _INNERMOST.sub("", brackets)
    if brackets:
        raise malformed(f"{what} is not JSON nested at most {MAX_DEPTH} levels deep")
    try:
        return json.loads(text)
    except ValueError as error:
        raise malformed(f"{what} is not JSON: {error}") from error


def read(raw: bytes | str, shape: TypeAdapter[T], what: str) -> T:
    """The payload `what`, as JSON (`parse_json`) in the provider's documented `shape`; 422 otherwise, saying
    where it differs, briefly."""
    try:
        return shape.validate_python(parse_json(raw, what))
    except ValidationError as error:
        places = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
            for e in error.errors(include_url=False)[:3]
        )
        raise malformed(f"{what} is not in the provider's documented shape ({places})") from error


def enhanced_status(*texts: str) -> str | None:
    """The first enhanced status code (RFC 3463) in what an ESP says about a failure, but a success's."""
    for text in texts:
        if (found := ENHANCED.search(text)) and found.group(1) != "2":
            return found.group(0)
    return None


def text(value: object, limit: int = 1000) -> str:
    return clean_text(value if value is not None else "", limit)


def message_ids(*values: str | None) -> list[str]:
    """Message-IDs as an ESP gives them (with or without angle brackets), as we store them: `<…>`."""
    found = []
    for value in values:
        bare = text(value, 500).strip("<>")
        if bare and "@" in bare and " " not in bare:
            found.append(f"<{bare}>")
    return found


def our_id(value: object) -> list[uuid.UUID]:
    """Our message id, from `X-Maildash-Message` or the metadata an ESP hands back (nothing when absent)."""
    try:
        return [uuid.UUID(str(value).strip())] if isinstance(value, str) and len(value) <= 100 else []
    except ValueError:
        return []
