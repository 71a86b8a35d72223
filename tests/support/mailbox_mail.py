"""Mail that comes back to a sending mailbox, as other people and servers write it (written for these tests):
a person's reply, an out-of-office, an ARF complaint report."""

from __future__ import annotations

import uuid


def reply(
    to: str, sender: str, in_reply_to: str | None, subject: str = "Re: Hello Jan", **headers: str
) -> bytes:
    """A person answering our mail from a mail client (threaded unless `in_reply_to` is None)."""
    thread = f"In-Reply-To: {in_reply_to}\r\nReferences: {in_reply_to}\r\n" if in_reply_to else ""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"From: Jan <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@lead.example>\r\nDate: Mon, 30 Nov 2026 15:00:00 +0000\r\n"
        f"{thread}{extra}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Sounds good, let's talk on Tuesday.\r\n"
    ).encode()


def out_of_office(to: str, sender: str, in_reply_to: str) -> bytes:
    """Exchange's automatic reply: RFC 3834 header and the usual subject."""
    return reply(
        to, sender, in_reply_to, subject="Automatic reply: Hello Jan", **{"Auto-Submitted": "auto-replied"}
    )


def arf_report(to: str, verp: str, original_id: str, lead: str) -> bytes:
    """A feedback loop's complaint (RFC 5965), with the original's headers."""
    return f"""From: Feedback Loop <fbl@isp.example>
To: {to}
Subject: FW: Hello Jan
Message-ID: <{uuid.uuid4().hex}@isp.example>
Date: Mon, 30 Nov 2026 15:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"

--ARF
Content-Type: text/plain; charset=us-ascii

This is an email abuse report for an email message received from IP 192.0.2.1.

--ARF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <{verp}>
Original-Rcpt-To: <{lead}>
Arrival-Date: Mon, 30 Nov 2026 14:00:00 +0000

--ARF
Content-Type: text/rfc822-headers

From: Sales <{to}>
To: {lead}
Subject: Hello Jan
Message-ID: {original_id}

--ARF--
""".replace("\n", "\r\n").encode()
