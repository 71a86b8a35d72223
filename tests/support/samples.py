"""Mail as other servers write it, for tests of inbound mail (written for these tests)."""

from __future__ import annotations

import uuid
from typing import Any


def postfix_dsn(
    verp: str, original_id: str, status: str = "5.1.1", action: str = "failed", to: str | None = None
) -> bytes:
    """A Postfix DSN for a mail sent with return path `verp` and `Message-ID` `original_id`."""
    return f"""Return-Path: <>
Received: by mx.acme-mail.example (Postfix) id 4F1C2A
Date: Tue, 24 Nov 2026 10:02:11 +0100 (CET)
From: MAILER-DAEMON@mx.acme-mail.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to or verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"

--B0UND
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.acme-mail.example.
I'm sorry to have to inform you that your message could not be delivered.

<jan@lead.example>: host mx.lead.example[203.0.113.5] said: 550 5.1.1
    <jan@lead.example>: Recipient address rejected: User unknown

--B0UND
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.acme-mail.example
X-Postfix-Queue-ID: 4F1C2A
Arrival-Date: Tue, 24 Nov 2026 10:02:09 +0100 (CET)

Final-Recipient: rfc822; jan@lead.example
Original-Recipient: rfc822;jan@lead.example
Action: {action}
Status: {status}
Remote-MTA: dns; mx.lead.example
Diagnostic-Code: smtp; 550 {status} <jan@lead.example>: Recipient address rejected: User unknown

--B0UND
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Sales <sales@acme-mail.example>
To: jan@lead.example
Subject: Hello Jan
Message-ID: {original_id}

--B0UND--
""".encode()


def pixel_of(mail: Any) -> str:
    """The path and query of the open pixel in a received e-mail."""
    html = mail.message.get_body(("html",)).get_content()
    start = html.index("/track/open.gif?")
    return html[start : html.index('"', start)].replace("&amp;", "&")


def production(**overrides: object) -> dict[str, object]:
    """Settings of a production deployment, with real-looking secrets (production refuses the development
    ones) and a bootstrap admin of its own."""
    return {
        "env": "production",
        "jwt_secret": "j" * 40,
        "tracking_secret": "t" * 40,
        "encryption_key": "e" * 40,
        "inbound_secret": "i" * 40,
        "admin_email": f"prod-admin-{uuid.uuid4().hex[:8]}@example.com",
        "admin_password": "a-real-admin-password",
        "public_tracker_url": "https://t.example",
        **overrides,
    }
