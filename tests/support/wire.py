"""Judge an e-mail's header block as it went on the wire: line by line, then with Python's strict parser."""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

# RFC 5322 §2.2: a field name is printable US-ASCII but the colon; a folded line starts with white space.
FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:[ \t]?[\x20-\x7e\t]*")
CONTINUATION_LINE = re.compile(rb"[ \t]+[\x21-\x7e][\x20-\x7e\t]*")

# What `shared.render.build` sets on every e-mail, once each.
LETTER_HEADERS = [
    "Content-Type",
    "MIME-Version",
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "X-Maildash-Message",
]


def checked_headers(raw: bytes) -> EmailMessage:
    """The e-mail parsed strictly, after asserting that each header line of each part is a proper
    `Name: value` or a folded continuation of at most 998 octets: nothing added, ended or split a header."""
    for block in _header_blocks(raw):
        lines = block.split(b"\r\n")
        assert FIELD_LINE.fullmatch(lines[0]), lines[0]
        for line in lines:
            assert len(line) <= 998, f"a header line of {len(line)} octets"
            assert FIELD_LINE.fullmatch(line) or CONTINUATION_LINE.fullmatch(line), line
    email = BytesParser(policy=policy.strict).parsebytes(raw)
    assert isinstance(email, EmailMessage)
    for part in email.walk():
        for name, value in part.items():
            assert not getattr(value, "defects", ()), (name, value, value.defects)
    return email


def _header_blocks(raw: bytes) -> list[bytes]:
    """The top-level header block and those of the MIME parts (each follows a boundary line)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    blocks = [head]
    boundary = re.search(rb'boundary="([^"]+)"', head)
    if boundary is None:
        return blocks
    for part in body.split(b"--" + boundary.group(1))[1:]:
        if part.startswith(b"--"):
            break
        blocks.extend(_header_blocks(part.removeprefix(b"\r\n")))
    return blocks
