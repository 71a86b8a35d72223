"""Reading bounces and replies in the shapes real mail servers send them (samples written for these tests)."""

from __future__ import annotations

import time
import uuid

import pytest

from services.tracker import inbound
from services.tracker.inbound import (
    Bounce,
    Limits,
    NotUnderstood,
    OverLimit,
    Reply,
    bounce_of,
    read_mail,
    reply_of,
)
from services.tracker.readers import limits_of
from shared.settings import Settings
from tests.support import hostile_mail as hostile
from tests.support import mailbox_mail
from tests.support.samples import postfix_dsn

LIMITS = limits_of(Settings())

MESSAGE = uuid.UUID("3f2b6c1e-8a4d-4b7e-9c1a-0d5e6f7a8b9c")
ORIGINAL_ID = f"<{MESSAGE}.0@acme-mail.example>"
VERP = f"bounce+{MESSAGE.hex}@acme-mail.example"


def read_bounce(raw: bytes, envelope_recipient: str | None = None) -> Bounce:
    return bounce_of(read_mail(raw, envelope_recipient, LIMITS))


def read_reply(raw: bytes) -> Reply:
    return reply_of(read_mail(raw, None, LIMITS))


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


REPLY = f"From: jan@lead.example\nIn-Reply-To: {ORIGINAL_ID}\nSubject: Re: Hello Jan\n\nYes.\n".encode()
DSN = postfix_dsn(VERP, ORIGINAL_ID)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (hostile.many_parts(REPLY, LIMITS.parts - 1), "more than 1000 MIME parts"),  # 1 + 1 + 999
        (hostile.many_parts(DSN, 200_000), "more than 1000 MIME parts"),
        (hostile.nested_multiparts(REPLY, LIMITS.depth - 1), "nest deeper than 32 levels"),
        (hostile.nested_multiparts(DSN, 5_000), "nest deeper than 32 levels"),  # a RecursionError before
        (hostile.nested_messages(REPLY, LIMITS.depth), "nest deeper than 32 levels"),
        (hostile.nested_messages(DSN, 5_000), "nest deeper than 32 levels"),
        (hostile.long_header(DSN, 1024 * 1024), "larger than 262144 bytes"),
        (hostile.many_headers(REPLY, LIMITS.header_lines), "more than 1000 lines"),
        (DSN.replace(b"Status:", b"X-Filler: 1\n" * 1000 + b"Status:"), "more than 1000 lines"),
    ],
    ids=[
        "parts",
        "200k-parts",
        "depth",
        "5000-multiparts",
        "messages",
        "5000-messages",
        "long-header",
        "many-headers",
        "status-block",
    ],
)
def test_a_mail_over_a_limit_is_refused_with_the_limit_named(raw: bytes, why: str) -> None:
    with pytest.raises(OverLimit, match=why):
        read_mail(raw, None, LIMITS)


@pytest.mark.parametrize(
    "raw",
    [
        hostile.many_parts(REPLY, LIMITS.parts - 2),
        hostile.nested_multiparts(REPLY, LIMITS.depth - 2),
        hostile.nested_messages(REPLY, LIMITS.depth - 1),
        hostile.many_headers(REPLY, LIMITS.header_lines - 3),
        hostile.long_header(REPLY, LIMITS.header_bytes - 200),
    ],
    ids=["parts", "multiparts", "messages", "headers", "header-bytes"],
)
def test_a_mail_just_within_the_limits_is_read(raw: bytes) -> None:
    assert read_reply(raw).references == (ORIGINAL_ID,)


def test_the_deepest_nesting_the_settings_allow_parses_without_recursion_error() -> None:
    deepest = Limits(parts=10_000, depth=200, header_lines=1000, header_bytes=1 << 20)
    from_a_machine = REPLY.replace(b"jan@lead.example", b"MAILER-DAEMON@lead.example")
    reading = read_mail(hostile.nested_multiparts(from_a_machine, 198), None, deepest)
    assert reading.references == (ORIGINAL_ID,)
    assert reading.no_failure == "no delivery failure found in it: not a bounce"  # flufl.bounce read it all
    with pytest.raises(OverLimit):
        read_mail(hostile.nested_multiparts(from_a_machine, 199), None, deepest)


def test_a_text_bounce_returning_a_huge_original_is_read_from_its_beginning() -> None:
    """flufl.bounce's heuristics see only the beginning of a mail (they took 7 s over 9 MB)."""
    raw = EXIM + b"X-Filler: yes\n\n" + b"a quoted line of the original message\n" * 250_000
    started = time.perf_counter()
    bounce = read_bounce(raw)
    assert time.perf_counter() - started < 2.0
    assert (bounce.permanent, bounce.status, bounce.recipient) == (True, "5.1.1", "jan@lead.example")
    assert ORIGINAL_ID in bounce.original_ids


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b.example\nReferences: <" + b"a@" * 100_000 + b"\n\n",  # backtracking Message-ID match
        b"From: a@b.example\n\n" + b"\n" * 1_000_000,  # "^\\s*Message-ID" took seconds per 10k lines
        b"From: a@b.example\nTo: unsubscribe+" + b"a" * 200_000 + b"\n\n",
        b"From: a@b.example\nTo: " + b"bounce+" * 30_000 + b"\n\n",
    ],
    ids=["message-id", "empty-lines", "unsubscribe", "verp"],
)
def test_hostile_text_is_read_in_linear_time(raw: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(NotUnderstood):
        reply_of(read_mail(raw, None, LIMITS))
    assert time.perf_counter() - started < 2.0


def test_what_a_mail_says_is_kept_as_plain_text_a_record_can_hold() -> None:
    """PostgreSQL refuses NUL; 8-bit bytes become U+FFFD; control characters and folding become spaces."""
    raw = postfix_dsn(VERP, ORIGINAL_ID).replace(
        b"Diagnostic-Code: smtp; 550", b"Diagnostic-Code: smtp; \x00\xff\x1b[31m\n\t550"
    )
    bounce = read_bounce(raw)
    assert bounce.diagnostic.startswith("\ufffd [31m 550 5.1.1")
    reply = read_reply(
        f"From: J\x00an\x0b <jan@lead.example>\nIn-Reply-To: <a\x00b@x.example> {ORIGINAL_ID}\n\n".encode()
    )
    assert reply.sender == "J an <jan@lead.example>"
    assert reply.references == (ORIGINAL_ID,)


def test_a_long_thread_keeps_its_newest_references() -> None:
    older = " ".join(f"<{i}@lead.example>" for i in range(500))
    reply = read_reply(f"From: jan@lead.example\nReferences: {older} {ORIGINAL_ID}\n\n".encode())
    assert reply.references[0] == ORIGINAL_ID
    assert len(reply.references) == 20
    assert reply.references[-1] == "<481@lead.example>"


# Bounces flufl.bounce reads from their text alone, as qmail and sendmail write them.
QMAIL = f"""Return-Path: <>
From: MAILER-DAEMON@mx.acme-mail.example
To: {VERP}
Subject: failure notice

Hi. This is the qmail-send program at mx.acme-mail.example.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<jan@lead.example>:
203.0.113.5 does not like recipient.
Remote host said: 550 5.1.1 <jan@lead.example>... User unknown
Giving up on 203.0.113.5.

--- Below this line is a copy of the message.

Message-ID: {ORIGINAL_ID}
Subject: Hello Jan
""".encode()
SENDMAIL = f"""From: Mail Delivery Subsystem <MAILER-DAEMON@lead.example>
To: <sales@acme-mail.example>
Subject: Returned mail: see transcript for details

The original message was received at Mon, 30 Nov 2026 10:00:00 GMT

   ----- The following addresses had permanent fatal errors -----
<jan@lead.example>
    (reason: 550 5.1.1 User unknown)

   ----- Original message follows -----
Message-ID: {ORIGINAL_ID}
""".encode()
# A person writing about deliveries, addresses and errors: words flufl.bounce's patterns look for.
PERSON = f"""From: Jan <jan@lead.example>
To: sales@acme-mail.example
Subject: Re: Hello Jan
In-Reply-To: {ORIGINAL_ID}

The following addresses had permanent fatal errors last week, the delivery failed:
<piet@lead.example>
    (reason: 550 5.1.1 User unknown)
Please write to jan@lead.example instead.
""".encode()
NEWSLETTER = (
    b"From: Shop <news@shop.example>\nTo: sales@acme-mail.example\nSubject: Weekly news\nPrecedence: bulk\n"
    b"Content-Type: multipart/alternative; boundary=ALT\n\n--ALT\nContent-Type: text/plain\n\n"
    + b"Offers, new arrivals and a story from the team.\n" * 40
    + b"--ALT\nContent-Type: text/html\n\n<p>Offers</p>\n--ALT--\n"
)
CORPUS = {
    "postfix": DSN,
    "postfix delayed": postfix_dsn(VERP, ORIGINAL_ID, status="4.4.1", action="delayed"),
    "postfix to the mailbox": postfix_dsn("sales@acme-mail.example", ORIGINAL_ID),
    "gmail": GMAIL,
    "exchange": EXCHANGE,
    "exim": EXIM,
    "qmail": QMAIL,
    "sendmail": SENDMAIL,
    "reply": REPLY,
    "newsletter": NEWSLETTER,
    "out of office": mailbox_mail.out_of_office("sales@acme-mail.example", "jan@lead.example", ORIGINAL_ID),
    "arf": mailbox_mail.arf_report("sales@acme-mail.example", VERP, ORIGINAL_ID, "jan@lead.example"),
    "no from": b"To: sales@acme-mail.example\nSubject: hello\n\nJust a note.\n",
    "attachment": hostile.attachment(REPLY, 200_000),
    "broken encodings": hostile.broken_encodings(REPLY),
    "NUL bytes": hostile.nul_bytes(REPLY),
}


def outcome(raw: bytes) -> object:
    try:
        return read_mail(raw, None, LIMITS)
    except NotUnderstood as why:
        return type(why), str(why)


@pytest.mark.parametrize("name", list(CORPUS))
def test_flufl_bounce_only_on_mail_from_a_machine_reads_every_sample_as_it_always_did(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gated = outcome(CORPUS[name])
    monkeypatch.setattr(inbound, "_from_a_machine", lambda *_: True)
    assert outcome(CORPUS[name]) == gated


@pytest.mark.parametrize("name", ["qmail", "sendmail", "exim"])
def test_text_bounces_are_still_read_by_flufl_bounce(name: str) -> None:
    reading = read_mail(CORPUS[name], None, LIMITS)
    assert reading.failure is not None
    assert (reading.failure.permanent, reading.failure.recipient) == (True, "jan@lead.example")


@pytest.mark.parametrize("raw", [REPLY, PERSON, NEWSLETTER], ids=["reply", "person", "newsletter"])
def test_flufl_bounce_never_runs_on_a_persons_mail_or_a_newsletter(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(_: object) -> None:
        raise AssertionError("flufl.bounce ran")

    monkeypatch.setattr(inbound, "all_failures", refused)
    assert read_mail(raw, None, LIMITS).no_failure == "no delivery failure found in it: not a bounce"


def test_a_person_writing_about_a_failed_delivery_is_a_reply_not_a_bounce() -> None:
    """flufl.bounce's heuristics, run on every mail, read this one as a hard bounce of piet@."""
    reading = read_mail(PERSON, None, LIMITS)
    assert (reading.failure, inbound.kind_of(reading)) == (None, "reply")
