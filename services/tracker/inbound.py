"""Reading inbound mail: delivery status notifications (bounces), complaints and replies. Pure: bytes in,
facts out.

`read_mail` is the one way in for every source of returning mail (the inbound routes, the mailbox reader):
the raw bytes in, a `Reading` out, a few small plain values whatever the mail's size. `bounce_of`,
`reply_of` and `kind_of` decide from a `Reading`, and `named_in_order` says which of our messages it names.
The parse is bounded by `Limits`: parts, nesting depth and header blocks are counted while the mail is
parsed, so a hostile mail is refused before it costs much. Time and memory are bounded by the process that
runs it (`services/tracker/readers.py`).

A DSN (RFC 3464) names its message by our VERP return path (`bounce+<message id>@domain`, the address the
bounce was sent to) or by the original `Message-ID` inside it; its `Status` field says hard (5.x.x) or soft
(4.x.x). Bounces in older, non-standard shapes are read by flufl.bounce. A complaint is an ARF feedback
report (RFC 5965: a `message/feedback-report` part, whose `Original-Mail-From` is our VERP address, beside
the original or its headers). A reply names what it answers in `In-Reply-To` / `References`; a mail to
`unsubscribe+<token>@domain` is the List-Unsubscribe mailto.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass
from email import policy
from email.feedparser import BytesFeedParser
from email.message import Message
from email.utils import parseaddr
from typing import Literal, TypeVar

from flufl.bounce import all_failures

VERP = re.compile(r"bounce\+([0-9a-f]{32})@", re.IGNORECASE)
UNSUBSCRIBE = re.compile(r"unsubscribe\+([A-Za-z0-9_.=-]{1,200})@", re.IGNORECASE)
ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# Neither side takes an "@" and both are bounded: a hostile header cannot make the match backtrack.
MESSAGE_ID = re.compile(r"<[^<>\s@]{1,250}@[^<>\s@]{1,250}>")
QUOTED_MESSAGE_ID = re.compile(r"^[ \t]*Message-ID:[ \t]*(.+)$", re.IGNORECASE | re.MULTILINE)
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # PostgreSQL refuses NUL; the others only garble records
# Where a bounce or an inbound mail carries the address it was delivered to.
RECIPIENT_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "Cc")
MAX_IDS = 20  # Message-IDs kept from one mail: a thread's newest, an original's few
# Where an ARF report names the original's envelope (our VERP return path) and recipient.
FEEDBACK_ADDRESS_FIELDS = ("Original-Mail-From", "Original-Rcpt-To", "Removal-Recipient")
# The subjects vacation responders write when they set none of the headers of RFC 3834.
AUTOMATIC_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheitsnotiz"
    r"|r[ée]ponse automatique|automatisch antwoord|afwezig(heidsmelding)?|on vacation|vacation reply"
    r"|respuesta autom[áa]tica|risposta automatica|i am (currently )?out of|i'm (currently )?out of)",
    re.IGNORECASE,
)
# What a bounce reports is in its first lines. flufl.bounce's heuristics scan every line of every part dozens
# of times (7 s for one 9 MB attachment, 2.5 s for a megabyte of empty lines): they get the first of these.
SCAN_LINES = 1000
SCAN_CHARS = 256 * 1024
# And only on mail a machine may have sent about a delivery: on a person's mail or a newsletter they find
# nothing, yet they were most of the CPU a mailbox reader spent on its mail (0.8 ms instead of 11 ms for a
# newsletter or a note).
MACHINE_SENDER = re.compile(r"mailer[-_.]?daemon|postmaster|mail[-_.]?delivery|^$", re.IGNORECASE)
BOUNCE_HEADERS = (
    "X-Failed-Recipients", "X-Mailer-Daemon", "X-Postfix-Queue-ID", "X-MS-Exchange-Message-Is-Ndr"
)  # fmt: skip
BOUNCE_SUBJECT = re.compile(
    r"undeliver|not (been )?delivered|delivery (status|fail|notification|problem|report|error|has failed)"
    r"|returned (mail|to sender)|mail delivery|failure notice|non-?delivery|bounce|delivery to the following"
    r"|could not (be )?deliver|mail system error|rejected|nicht zustellbar|unzustellbar|non remis",
    re.IGNORECASE,
)
FEED_CHUNK = 64 * 1024  # fed piecewise, the parser never splits the whole mail into lines at once
NO_FAILURE = "no delivery failure found in it: not a bounce"


class NotUnderstood(ValueError):
    """The mail cannot be used; the reason says why. Nothing is recorded."""


class OverLimit(NotUnderstood):
    """The mail is over one of the limits on reading it (structure, time, memory); the reason names it."""


@dataclass(frozen=True)
class Limits:
    """How much structure one mail may have (the settings `MAILDASH_INBOUND_MAX_*`)."""

    parts: int  # MIME parts, the mail itself and every status block of a DSN included
    depth: int  # nesting of multipart and message/* parts
    header_lines: int  # lines of one part's header block
    header_bytes: int  # size of one part's header block


@dataclass(frozen=True)
class Failure:
    """What a bounce reports failed, from its delivery-status part or, in older shapes, its text."""

    permanent: bool
    status: str | None  # the enhanced status code, e.g. 5.1.1
    recipient: str | None
    diagnostic: str


@dataclass(frozen=True)
class Reading:
    """Everything the classification takes from one mail."""

    verp_message_id: uuid.UUID | None  # from the VERP address it was delivered to
    original_ids: tuple[str, ...]  # Message-IDs quoted from the original a bounce returns
    failure: Failure | None
    no_failure: str  # why `failure` is None: the mail is no bounce
    references: tuple[str, ...]  # In-Reply-To first, then References from newest to oldest
    unsubscribe_token: str | None  # from a List-Unsubscribe mailto address it was delivered to
    sender: str
    automatic: bool  # an out-of-office or other auto-reply: not a person answering
    # Added for the mailbox reader; defaults keep answers of readers of the version before valid.
    mail_id: str | None = None  # the mail's own Message-ID
    sender_address: str = ""  # the From address alone, lower-cased
    feedback_type: str | None = None  # an ARF report's Feedback-Type (abuse, fraud, …): a complaint
    report: bool = False  # a multipart/report: a machine's report, never a person's reply


Row = TypeVar("Row")
Kind = Literal["hard_bounce", "soft_bounce", "complaint", "unsubscribe", "auto_reply", "reply", "unrelated"]


@dataclass(frozen=True)
class Bounce(Failure):
    """What failed, and the message it names."""

    message_id: uuid.UUID | None  # from the VERP address
    original_ids: tuple[str, ...]  # Message-IDs quoted from the original


@dataclass(frozen=True)
class Reply:
    references: tuple[str, ...]  # In-Reply-To first, then References from newest to oldest
    unsubscribe_token: str | None
    sender: str
    automatic: bool  # an out-of-office or other auto-reply: not a person answering


class _BoundedParser(BytesFeedParser):
    """The stdlib's parser (compat32), refusing a mail as soon as it passes a limit.

    It hooks the parser's own steps, `_new_message` for each part and `_parse_headers` for each header block:
    private, but stable for many Python versions, and the unit tests of the limits fail if they change."""

    def __init__(self, limits: Limits, headers_only: bool = False) -> None:
        super().__init__(policy=policy.compat32)
        self._limits = limits
        self._parts = 0
        if headers_only:
            self._set_headersonly()  # type: ignore[attr-defined]

    def _new_message(self) -> None:
        self._parts += 1
        if self._parts > self._limits.parts:
            raise OverLimit(f"it has more than {self._limits.parts} MIME parts")
        if len(self._msgstack) >= self._limits.depth:  # type: ignore[attr-defined]
            raise OverLimit(f"its MIME parts nest deeper than {self._limits.depth} levels")
        super()._new_message()  # type: ignore[misc]

    def _parse_headers(self, lines: list[str]) -> None:
        if len(lines) > self._limits.header_lines:
            raise OverLimit(f"a header block has more than {self._limits.header_lines} lines")
        if sum(map(len, lines)) > self._limits.header_bytes:
            raise OverLimit(f"a header block is larger than {self._limits.header_bytes} bytes")
        super()._parse_headers(lines)  # type: ignore[misc]


def _parse(raw: bytes, limits: Limits, headers_only: bool = False) -> Message:
    parser = _BoundedParser(limits, headers_only)
    for start in range(0, len(raw), FEED_CHUNK):
        parser.feed(raw[start : start + FEED_CHUNK])
    return parser.close()


def _cut_short(mail: Message) -> None:
    """Keep the first SCAN_LINES lines and SCAN_CHARS characters of the parts' bodies, in all."""
    lines, chars = SCAN_LINES, SCAN_CHARS
    for part in mail.walk():
        payload = part.get_payload()
        if isinstance(payload, str):  # lines as flufl.bounce reads them: split at "\n" only
            kept = payload[:chars].split("\n", lines)[:lines]
            lines -= len(kept)
            part.set_payload("\n".join(kept))
            chars -= len(part.get_payload())


def clean_text(value: object, limit: int) -> str:
    """A header's (or an ESP event's) value as one line of valid text, fit for a record (8-bit bytes come as
    U+FFFD)."""
    text = str(value)[: limit * 4].encode("utf-8", "replace").decode("utf-8")
    return " ".join(CONTROLS.sub(" ", text).split())[:limit]


def _ids(*values: object) -> list[str]:
    return [i for value in values for i in MESSAGE_ID.findall(CONTROLS.sub(" ", str(value)))]


def _distinct(ids: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))[:MAX_IDS]


def _addresses(mail: Message, envelope_recipient: str | None) -> list[str]:
    found = [envelope_recipient] if envelope_recipient else []
    found += [str(value) for name in RECIPIENT_HEADERS for value in mail.get_all(name, [])]
    return found


def _verp(addresses: list[str]) -> uuid.UUID | None:
    for address in addresses:
        if match := VERP.search(address):
            return uuid.UUID(match.group(1))
    return None


def _unsubscribe_token(addresses: list[str]) -> str | None:
    for address in addresses:
        if match := UNSUBSCRIBE.search(address):
            return match.group(1)
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


def _original_ids(mail: Message, limits: Limits) -> tuple[str, ...]:
    """Message-IDs of the original, from an attached message or its attached headers."""
    quoted: list[object] = []
    for part in mail.walk():
        kind = part.get_content_type()
        payload = part.get_payload()
        if kind == "message/rfc822" and isinstance(payload, list):
            quoted += [inner.get("Message-ID", "") for inner in payload if isinstance(inner, Message)]
        elif kind == "text/rfc822-headers":
            quoted.append(_parse(_bytes(part), limits, headers_only=True).get("Message-ID", ""))
    if ids := _ids(*quoted):
        return _distinct(ids)
    # A plain-text bounce quoting the original's headers.
    texts = (_bytes(p).decode("utf-8", "replace") for p in mail.walk() if p.get_content_maintype() == "text")
    return _distinct(_ids(*(line for text in texts for line in QUOTED_MESSAGE_ID.findall(text))))


def _recipient(field: object) -> str | None:
    """`rfc822; jan@example.com` → `jan@example.com`. (A field with 8-bit bytes comes as a `Header`.)"""
    return clean_text(field or "", 1000).split(";", 1)[-1].strip()[:320] or None


def _from_a_machine(mail: Message, addresses: list[str]) -> bool:
    """Whether the mail may be a bounce in an older shape: sent to our VERP address, from a null sender or a
    mail system's address, automatic (RFC 3834), a report, or with a bounce's headers or subject."""
    return (
        _verp(addresses) is not None
        or any(str(path).strip() in ("<>", "") for path in mail.get_all("Return-Path", []))
        or bool(MACHINE_SENDER.search(parseaddr(clean_text(mail.get("From", ""), 320))[1]))
        or str(mail.get("Auto-Submitted", "no")).strip().lower() != "no"
        or mail.get_content_type() == "multipart/report"
        or any(name in mail for name in BOUNCE_HEADERS)
        or bool(BOUNCE_SUBJECT.search(clean_text(mail.get("Subject", ""), 300)))
    )


def _failure(mail: Message, from_a_machine: bool) -> Failure:
    """Raises NotUnderstood when the mail reports no delivery failure. Cuts the mail's bodies short."""
    blocks = _status_blocks(mail)
    failed = [b for b in blocks if str(b.get("Action", "")).strip().lower() in ("failed", "delayed")]
    if failed or blocks:
        block = (failed or blocks)[0]
        status_match = ENHANCED.search(str(block.get("Status", "")))
        action = str(block.get("Action", "")).strip().lower()
        if status_match is None and action not in ("failed", "delayed"):
            raise NotUnderstood("the delivery status reports no failure")
        status = status_match.group(0) if status_match else None
        if status and status.startswith("2"):
            raise NotUnderstood(f"the delivery status {status} is a success, not a bounce")
        return Failure(
            permanent=status.startswith("5") if status else action == "failed",
            status=status,
            recipient=_recipient(block.get("Final-Recipient")) or _recipient(block.get("Original-Recipient")),
            diagnostic=clean_text(str(block.get("Diagnostic-Code", "")).split(";", 1)[-1], 1000),
        )
    if not from_a_machine:
        raise NotUnderstood(NO_FAILURE)
    _cut_short(mail)
    try:
        temporary, permanent = all_failures(mail)
    except Exception as error:  # some of its detectors trip over unusual mail (no From, say)
        raise NotUnderstood(f"not readable as a bounce ({type(error).__name__})") from error
    if not temporary and not permanent:
        raise NotUnderstood(NO_FAILURE)
    addresses = permanent or temporary
    # The notification's text, decoded leniently: a mangled charset must not stop the reading.
    first_part = mail.get_payload(0) if mail.is_multipart() else mail
    parts = list(first_part.walk()) if isinstance(first_part, Message) else []
    status_match = ENHANCED.search(" ".join(_bytes(part).decode("utf-8", "replace") for part in parts))
    return Failure(
        permanent=bool(permanent),
        status=status_match.group(0) if status_match and status_match.group(1) != "2" else None,
        recipient=clean_text(sorted(addresses)[0].decode("utf-8", "replace"), 320) or None,
        diagnostic=clean_text(mail.get("Subject", ""), 1000),
    )


def _is_automatic(mail: Message) -> bool:
    """RFC 3834 `Auto-Submitted`, and the headers and subjects vacation responders use in practice."""
    auto = str(mail.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(mail.get("Precedence", "")).strip().lower()
    return (
        auto != "no"
        or precedence in ("auto_reply", "bulk", "junk", "list")
        or any(mail.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"))
        or bool(AUTOMATIC_SUBJECT.match(clean_text(mail.get("Subject", ""), 200)))
    )


def _feedback(mail: Message) -> tuple[str | None, list[str]]:
    """An ARF report's Feedback-Type (None: no ARF report) and the addresses its report names."""
    for part in mail.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        fields = payload[0] if isinstance(payload, list) and payload else part
        if isinstance(fields, Message):
            kind = clean_text(fields.get("Feedback-Type", "abuse"), 50).lower() or "abuse"
            return kind, [str(v) for name in FEEDBACK_ADDRESS_FIELDS for v in fields.get_all(name, [])]
    return None, []


def read_mail(raw: bytes, envelope_recipient: str | None, limits: Limits) -> Reading:
    """Raises NotUnderstood for what is no e-mail, OverLimit for a mail over `limits`."""
    if not raw.strip():
        raise NotUnderstood("the body is empty; send the raw e-mail")
    mail = _parse(raw, limits)
    if not mail.keys():
        raise NotUnderstood("the body is not an e-mail (no headers)")
    feedback_type, reported = _feedback(mail)
    addresses = _addresses(mail, envelope_recipient) + reported
    original_ids = _original_ids(mail, limits)
    references = _ids(mail.get("In-Reply-To", "")) + _ids(mail.get("References", ""))[::-1]
    try:  # last: it cuts the bodies short
        failure, no_failure = _failure(mail, _from_a_machine(mail, addresses)), ""
    except NotUnderstood as why:
        failure, no_failure = None, str(why)
    return Reading(
        verp_message_id=_verp(addresses),
        original_ids=original_ids,
        failure=failure,
        no_failure=no_failure,
        references=_distinct(references),
        unsubscribe_token=_unsubscribe_token(addresses),
        sender=clean_text(mail.get("From", ""), 320),
        automatic=_is_automatic(mail),
        mail_id=next(iter(_ids(mail.get("Message-ID", ""))), None),
        sender_address=parseaddr(clean_text(mail.get("From", ""), 320))[1].lower()[:320],
        feedback_type=feedback_type,
        report=mail.get_content_type() == "multipart/report",
    )


def bounce_of(reading: Reading) -> Bounce:
    """Raises NotUnderstood when the mail is no bounce or names no message."""
    if reading.failure is None:
        raise NotUnderstood(reading.no_failure)
    if reading.verp_message_id is None and not reading.original_ids:
        raise NotUnderstood("it names no message: neither a VERP address nor the original Message-ID")
    return Bounce(
        **dataclasses.asdict(reading.failure),
        message_id=reading.verp_message_id,
        original_ids=reading.original_ids,
    )


def reply_of(reading: Reading) -> Reply:
    """Raises NotUnderstood when the mail answers no message and unsubscribes from none."""
    if reading.unsubscribe_token is None and not reading.references:
        raise NotUnderstood("it answers no message: no In-Reply-To or References, and no unsubscribe address")
    return Reply(reading.references, reading.unsubscribe_token, reading.sender, reading.automatic)


def kind_of(reading: Reading) -> Kind:
    """What a mail is, before it is matched to a message: a complaint (ARF), a bounce (a DSN's failure), a
    mail to the unsubscribe address, an automatic reply, or a person's reply. Any other report (a delivery
    success, a read receipt) is unrelated."""
    if reading.feedback_type is not None:
        return "complaint"
    if reading.failure is not None:
        return "hard_bounce" if reading.failure.permanent else "soft_bounce"
    if reading.unsubscribe_token is not None:
        return "unsubscribe"
    if reading.report:
        return "unrelated"
    return "auto_reply" if reading.automatic else "reply"


def named_in_order(reading: Reading) -> list[uuid.UUID | str]:
    """The names of our message a mail carries, the most telling first: the Message-IDs it answers
    (In-Reply-To, then References), our VERP address, then the Message-IDs of the original it quotes."""
    verp = [reading.verp_message_id] if reading.verp_message_id is not None else []
    return [*reading.references, *verp, *reading.original_ids]


def first_named(names: list[uuid.UUID | str], found: dict[uuid.UUID | str, Row]) -> Row | None:
    """Of the messages found by any name (keyed by message id and by Message-ID), the one named first."""
    return next((found[name] for name in names if name in found), None)
