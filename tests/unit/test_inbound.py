"""Reading bounces and replies in the shapes real mail servers send them (samples written for these tests)."""

from __future__ import annotations

import uuid

import pytest

from services.tracker.inbound import NotUnderstood, read_bounce, read_reply
from tests.support.samples import postfix_dsn

MESSAGE = uuid.UUID("3f2b6c1e-8a4d-4b7e-9c1a-0d5e6f7a8b9c")
ORIGINAL_ID = f"<{MESSAGE}.0@acme-mail.example>"
VERP = f"bounce+{MESSAGE.hex}@acme-mail.example"


GMAIL = f"""Delivered-To: {VERP}
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {VERP}
Subject: Delivery Status Notification (Failure)
Message-ID: <000000000000abcdef@google.com>
MIME-Version: 1.0
Content-Type: multipart/report; boundary="g00gle"; report-type=delivery-status

--g00gle
Content-Type: text/plain; charset="UTF-8"

Address not found
Your message wasn't delivered to jan@lead.example because the address couldn't be found.

--g00gle
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; mx.acme-mail.example

Final-Recipient: rfc822; jan@lead.example
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does not exist.

--g00gle
Content-Type: message/rfc822

From: Sales <sales@acme-mail.example>
To: jan@lead.example
Subject: Hello Jan
Message-ID: {ORIGINAL_ID}

Hi Jan
--g00gle--
""".encode()

# Exchange's NDR names the original only by Message-ID (it was relayed: no VERP address survives).
EXCHANGE = f"""From: postmaster@lead.example
To: sales@acme-mail.example
Subject: Undeliverable: Hello Jan
Content-Type: multipart/report; report-type=delivery-status; boundary="exch"
X-MS-Exchange-Message-Is-Ndr:

--exch
Content-Type: text/plain; charset="us-ascii"

Delivery has failed to these recipients or groups:
jan@lead.example
The email address you entered couldn't be found.

--exch
Content-Type: message/delivery-status

Reporting-MTA: dns;EX01.lead.example

Final-recipient: RFC822; jan@lead.example
Action: failed
Status: 5.1.10
Diagnostic-code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup

--exch
Content-Type: text/rfc822-headers

Message-ID: {ORIGINAL_ID}
Subject: Hello Jan

--exch--
""".encode()

# Exim's classic bounce: no delivery-status part at all, just text (read by flufl.bounce).
EXIM = f"""Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.acme-mail.example>
To: {VERP}
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1abc-0001@mx.acme-mail.example>
X-Failed-Recipients: jan@lead.example

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  jan@lead.example
    SMTP error from remote mail server after RCPT TO:<jan@lead.example>:
    host mx.lead.example [203.0.113.5]: 550 5.1.1 No such user here

------ This is a copy of the message, including all the headers. ------

From: Sales <sales@acme-mail.example>
Message-ID: {ORIGINAL_ID}
Subject: Hello Jan
""".encode()


@pytest.mark.parametrize(
    ("raw", "status", "by_verp"),
    [
        (
            postfix_dsn(
                VERP,
                ORIGINAL_ID,
            ),
            "5.1.1",
            True,
        ),
        (GMAIL, "5.1.1", True),
        (EXCHANGE, "5.1.10", False),
        (EXIM, "5.1.1", True),
    ],
    ids=["postfix", "gmail", "exchange", "exim"],
)
def test_hard_bounces_from_real_world_shapes(raw: bytes, status: str, by_verp: bool) -> None:
    bounce = read_bounce(raw)
    assert bounce.permanent
    assert bounce.status == status
    assert bounce.message_id == (MESSAGE if by_verp else None)
    assert ORIGINAL_ID in bounce.original_ids
    assert bounce.recipient == "jan@lead.example"


def test_a_delayed_dsn_is_a_soft_bounce() -> None:
    bounce = read_bounce(postfix_dsn(VERP, ORIGINAL_ID, status="4.4.1", action="delayed"))
    assert not bounce.permanent
    assert bounce.status == "4.4.1"


def test_the_envelope_recipient_names_the_message_when_headers_do_not() -> None:
    bounce = read_bounce(
        postfix_dsn(VERP, ORIGINAL_ID, to="postmaster@acme-mail.example"), envelope_recipient=VERP
    )
    assert bounce.message_id == MESSAGE


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"\x00\xff garbage without headers", "no headers"),
        (b"Subject: hello\n\nJust a normal mail, nothing bounced.\n", "not.*a bounce"),
        (b"From: jan@lead.example\nSubject: hello\n\nJust a normal mail.\n", "not a bounce"),
        (postfix_dsn(VERP, ORIGINAL_ID, status="2.0.0", action="delivered"), "success"),
        (
            postfix_dsn(VERP, ORIGINAL_ID, to="someone@else.example").replace(ORIGINAL_ID.encode(), b""),
            "names no message",
        ),
    ],
)
def test_what_is_not_a_usable_bounce_is_refused_with_a_reason(raw: bytes, why: str) -> None:
    with pytest.raises(NotUnderstood, match=why):
        read_bounce(raw)


def test_8_bit_bytes_in_the_status_fields_still_read_as_a_bounce() -> None:
    """compat32 hands such a field over as a `Header`, not a str (found by the tracker fuzz)."""
    raw = postfix_dsn(VERP, ORIGINAL_ID).replace(b"rfc822; jan@", b"rfc822; j\xe4n\xff@")
    bounce = read_bounce(raw)
    assert bounce.permanent
    assert bounce.recipient is not None
    assert "@lead.example" in bounce.recipient


def test_a_reply_threaded_by_references_only() -> None:
    raw = f"""From: Jan <jan@lead.example>
To: sales@acme-mail.example
Subject: Re: Hello Jan
References: <older@lead.example> {ORIGINAL_ID}

Sounds interesting, call me.
""".encode()
    reply = read_reply(raw)
    assert reply.references[0] == ORIGINAL_ID  # the newest reference first
    assert not reply.automatic
    assert reply.unsubscribe_token is None


def test_an_out_of_office_is_an_automatic_reply() -> None:
    raw = f"""From: jan@lead.example
To: sales@acme-mail.example
Subject: Out of office
In-Reply-To: {ORIGINAL_ID}
Auto-Submitted: auto-replied

I am away until Monday.
""".encode()
    assert read_reply(raw).automatic


def test_a_mail_to_the_unsubscribe_address_carries_its_token() -> None:
    raw = b"From: jan@lead.example\nTo: unsubscribe+abc_DEF-123@acme-mail.example\nSubject: unsubscribe\n\n"
    assert read_reply(raw).unsubscribe_token == "abc_DEF-123"


def test_a_mail_that_answers_nothing_is_refused() -> None:
    with pytest.raises(NotUnderstood, match="answers no message"):
        read_reply(b"From: jan@lead.example\nSubject: hi\n\nhello\n")
