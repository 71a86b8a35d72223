"""Worst-case inbound mail, each shape built around a genuine mail (a DSN, a reply): whatever a shape leaves
readable still names a real message. Written for these tests."""

from __future__ import annotations

import base64
import random
import re

HEADER_END = re.compile(rb"\r?\n\r?\n")
CONTENT_TYPE = re.compile(rb"^Content-Type:.*\n", re.IGNORECASE | re.MULTILINE)


def _split(mail: bytes) -> tuple[bytes, bytes, bytes]:
    """Top headers (without Content-Type), that Content-Type line, body."""
    match = HEADER_END.search(mail)
    head, body = (mail[: match.start()] + b"\n", mail[match.end() :]) if match else (mail + b"\n", b"")
    content_type = CONTENT_TYPE.search(head)
    if content_type is None:
        return head, b"Content-Type: text/plain\n", body
    return head[: content_type.start()] + head[content_type.end() :], content_type.group(0), body


def with_parts(mail: bytes, *parts: bytes) -> bytes:
    """The mail's own body as the first part of a multipart/mixed, then `parts` (each headers + body)."""
    head, content_type, body = _split(mail)
    boundary = b"--=_h"
    inner = b"".join(boundary + b"\n" + part + b"\n" for part in parts)
    return (
        head
        + b'Content-Type: multipart/mixed; boundary="=_h"\n\n'
        + boundary
        + b"\n"
        + content_type
        + b"\n"
        + body
        + b"\n"
        + inner
        + boundary
        + b"--\n"
    )


def many_parts(mail: bytes, count: int) -> bytes:
    return with_parts(mail, *(b"\n%d" % i for i in range(count)))  # no headers: text/plain


def nested_multiparts(mail: bytes, levels: int) -> bytes:
    """The mail's body at the bottom of `levels` multipart/mixed parts, one inside the other."""
    head, content_type, body = _split(mail)
    opening = b"".join(
        b'--n%d\nContent-Type: multipart/mixed; boundary="n%d"\n\n' % (i, i + 1) for i in range(levels)
    )
    closing = b"".join(b"--n%d--\n" % i for i in reversed(range(levels + 1)))
    bottom = b"--n%d\n" % levels + content_type + b"\n" + body + b"\n"
    return head + b'Content-Type: multipart/mixed; boundary="n0"\n\n' + opening + bottom + closing


def nested_messages(mail: bytes, levels: int) -> bytes:
    """The mail inside `levels` message/rfc822 parts."""
    head, _, _ = _split(mail)
    return head + b"Content-Type: message/rfc822\n\n" * levels + mail


def attachment(mail: bytes, size: int, seed: int = 1) -> bytes:
    data = base64.encodebytes(random.Random(seed).randbytes(size * 3 // 4))
    return with_parts(
        mail,
        b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n" + data,
    )


def long_line(mail: bytes, size: int) -> bytes:
    return with_parts(mail, b"Content-Type: text/plain\n\n" + b"a" * size)


def tiny_lines(mail: bytes, size: int) -> bytes:
    """A text part of `size` bytes in lines of one character: the parser's most expensive shape per byte."""
    return with_parts(mail, b"Content-Type: text/plain\n\n" + b"a\n" * (size // 2))


def long_header(mail: bytes, size: int) -> bytes:
    return b"X-Long: " + b"a" * size + b"\n" + mail


def many_headers(mail: bytes, count: int) -> bytes:
    return b"".join(b"X-Many-%d: v\n" % i for i in range(count)) + mail


def broken_encodings(mail: bytes) -> bytes:
    """Bad base64 and quoted-printable, unknown and lying charsets, RFC 2047 garbage in headers."""
    garbled = (
        b"Subject: =?x-unknown?Q?=FF=00?= =?utf-8?B?!!!*?= =?utf-8?Q?a=?= =?=?= =?utf-8?B??=\n"
        b"X-Name: =?iso-8859-1?q?J=E4n?=\xff\xfe =?utf-7?B?K0FHRS0=?= =?gb2312?B?1eI=?=\n"
    )
    return garbled + with_parts(
        mail,
        b"Content-Type: text/plain; charset=x-klingon\nContent-Transfer-Encoding: base64\n\n!!!no@b64=\n=",
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n=ZZ=\n=0=",
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n\xff\xfe\xc3(\xed\xa0",
        b"Content-Type: text/plain; charset=\xff\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n!!",
        b"Content-Type: \xff/\x00; charset*=utf-8''%FF%00\nContent-Transfer-Encoding: \xff\n\nx",
    )


def nul_bytes(mail: bytes) -> bytes:
    """NUL in header values (the first sender's), a DSN's diagnostic and a body; one ends the header block."""
    mail = mail.replace(b"Diagnostic-Code: smtp; ", b"Diagnostic-Code: smtp; \x00")
    head, content_type, body = _split(mail)
    return (
        b"From: J\x00an <jan\x00@lead.example>\nX-Nul: \x00v\x00\n"
        + head
        + content_type
        + b"X-Nul\x00: a name with NUL is no header: it starts the body\n\n"
        + body.replace(b"\n\n", b"\n\n\x00\x00 Message-ID: <a\x00b@x.example>\x00\n", 1)
    )


def garbage(size: int, seed: int = 2) -> bytes:
    return random.Random(seed).randbytes(size)


def worst_cases(mail: bytes) -> dict[str, bytes]:
    """One of each shape at full size, around `mail`: first those over a default limit, then the others."""
    return {
        "garbage 9 MB": garbage(9 * 1024 * 1024),
        "12,000 parts": many_parts(mail, 12_000),
        "200,000 parts": many_parts(mail, 200_000),
        "5,000 nested multiparts": nested_multiparts(mail, 5_000),
        "5,000 nested messages": nested_messages(mail, 5_000),
        "1 MB header": long_header(mail, 1024 * 1024),
        "100,000 headers": many_headers(mail, 100_000),
        "NUL bytes": nul_bytes(mail),
        "broken encodings": broken_encodings(mail),
        "9 MB attachment": attachment(mail, 9 * 1024 * 1024),
        "9 MB line": long_line(mail, 9 * 1024 * 1024),
        "9 MB of one-character lines": tiny_lines(mail, 9 * 1024 * 1024),
    }
