"""ESP webhooks, the pure parts: each provider's authentication and the events it reports, from payloads
shaped as the providers document them and signed with keys generated here."""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tracker.esp import mailgun, postmark, sendgrid, ses
from services.tracker.esp.common import MAX_DEPTH, Refused, parse_json
from services.tracker.esp.sns import Sns
from shared import esp
from shared.settings import Settings
from tests.support.esp import (
    SendGridSigner,
    Sent,
    SnsSigner,
    basic_auth,
    mailgun_request,
    postmark_event,
    sendgrid_events,
    ses_event,
    sns_confirmation,
    sns_notification,
)

AGE = timedelta(minutes=5)


def now() -> datetime:
    """Read as each test runs: the builders date requests by the clock, not by a time fixed at import."""
    return datetime.now(UTC)


OURS = str(uuid.uuid4())
SENT = Sent(
    f"<{OURS}.0@outreach.example>",
    OURS,
    "jan@lead.example",
    [
        ("From", "Sales <sales@outreach.example>"),
        ("Message-ID", f"<{OURS}.0@outreach.example>"),
        ("X-Maildash-Message", OURS),
    ],
)
NAMES = (uuid.UUID(OURS), f"<{OURS}.0@outreach.example>")
# What each provider's documented event of this kind (permanent or not) is to us.
KINDS = [
    ("bounce", True, "hard_bounce"),
    ("bounce", False, "soft_bounce"),
    ("complaint", True, "complaint"),
    ("delivery", True, "delivery"),
]
SNS_SIGNER = SnsSigner()
SNS_KEY = SNS_SIGNER.key.public_key()
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"


@contextlib.contextmanager
def refused(status: int, code: str | None = None) -> Iterator[None]:
    """The block raises Refused with this status (and code)."""
    with pytest.raises(Refused) as caught:
        yield
    assert (caught.value.status, code or caught.value.code) == (status, caught.value.code), caught.value


# ── bounded JSON ────────────────────────────────────────────────────────────────────────────────────────


def nested(depth: int) -> str:
    return "[" * (depth - 1) + '{"a": "]]]}}}\\"["}' + "]" * (depth - 1)


def test_json_nested_at_the_limit_is_read_and_one_level_deeper_is_refused() -> None:
    assert parse_json(nested(MAX_DEPTH), "it")
    with refused(422, "malformed"):
        parse_json(nested(MAX_DEPTH + 1), "it")
    with refused(422, "malformed"):
        parse_json("[" * 100_000, "it")  # nothing recursive ever sees this


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(JSON, st.sampled_from([0, 1, MAX_DEPTH - 2]))
def test_json_is_read_exactly_when_it_nests_at_most_the_limit(value: Any, wrapping: int) -> None:
    text = "[" * wrapping + json.dumps(value, ensure_ascii=False) + "]" * wrapping
    if depth(value) + wrapping <= MAX_DEPTH:
        assert parse_json(text.encode(), "it") == json.loads(text)
    else:
        with refused(422):
            parse_json(text.encode(), "it")


def test_bodies_that_are_not_utf8_json_are_malformed() -> None:
    for body in (b"\xff\xfe", b"", b"{", b"[1,]", b"1" * 5000):
        with refused(422, "malformed"):
            parse_json(body, "it")


# ── SNS and SES ─────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_sns_notification_signed_by_the_certificates_key_verifies(version: str) -> None:
    fields = sns_notification(ses_event("bounce", SENT), Subject="Amazon SES Email Event Notification")
    message = ses.sns_message(SNS_SIGNER.signed(fields, CERT_URL, version))
    ses.verify(message, SNS_KEY)
    assert message.timestamp.tzinfo is not None


@pytest.mark.parametrize("field", ["Message", "MessageId", "Subject", "Timestamp", "TopicArn"])
def test_changing_any_signed_field_breaks_the_sns_signature(field: str) -> None:
    fields = sns_notification(ses_event("bounce", SENT), Subject="s")
    signed = json.loads(SNS_SIGNER.signed(fields, CERT_URL))
    signed[field] = signed[field].replace("1", "2") + "x"
    with refused(401, "unauthorized"):
        ses.verify(ses.sns_message(json.dumps(signed).encode()), SNS_KEY)


def test_an_sns_signature_of_another_key_or_garbage_is_refused() -> None:
    fields = sns_notification(ses_event("bounce", SENT))
    other = rsa.generate_private_key(65537, 2048).public_key()
    with refused(401):
        ses.verify(ses.sns_message(SNS_SIGNER.signed(fields, CERT_URL)), other)
    garbage = {**json.loads(SNS_SIGNER.signed(fields, CERT_URL)), "Signature": "not base64!"}
    with refused(401):
        ses.verify(ses.sns_message(json.dumps(garbage).encode()), SNS_KEY)


def test_a_subscription_confirmation_signs_its_url_and_token() -> None:
    fields = sns_confirmation("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription", "t0ken")
    message = ses.sns_message(SNS_SIGNER.signed(fields, CERT_URL, "2"))
    ses.verify(message, SNS_KEY)
    tampered = json.loads(SNS_SIGNER.signed(fields, CERT_URL, "2"))
    tampered["SubscribeURL"] = "https://sns.eu-west-1.amazonaws.com/?Action=Other"
    with refused(401):
        ses.verify(ses.sns_message(json.dumps(tampered).encode()), SNS_KEY)
    without_token = {k: v for k, v in tampered.items() if k != "Token"}
    with refused(422):
        ses.sns_message(json.dumps(without_token).encode())


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/cert.pem",  # not https
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.example/cert.pem",
        "https://user@sns.eu-west-1.amazonaws.com/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com\\@evil.example/cert.pem",
        "https:///cert.pem",
        "not a url at all",
        "",
    ],
)
def test_certificates_and_confirmations_come_only_from_sns_hosts(url: str) -> None:
    with refused(401):
        Sns(Settings()).allowed(url, "SigningCertURL")


def test_the_sns_hosts_of_every_region_are_allowed() -> None:
    sns = Sns(Settings())
    for host in (
        "sns.us-east-1.amazonaws.com",
        "sns.eu-west-1.amazonaws.com",
        "sns.cn-north-1.amazonaws.com.cn",
    ):
        assert sns.allowed(f"https://{host}/SimpleNotificationService-x.pem", "it").host == host


@pytest.mark.parametrize(("kind", "permanent", "expected"), KINDS)
def test_ses_events_are_classified_and_name_our_message(kind: str, permanent: bool, expected: str) -> None:
    event = ses_event(kind, SENT, permanent)
    reported = ses.ses_event(ses.sns_message(SNS_SIGNER.signed(sns_notification(event), CERT_URL)))
    assert (reported.kind, reported.names, reported.recipient) == (expected, NAMES, "jan@lead.example")
    if kind in ("bounce", "complaint"):
        assert reported.event_id == event[kind]["feedbackId"]
    if kind == "bounce":
        assert reported.status == ("5.1.1" if permanent else "4.4.7")
    if kind == "complaint":
        assert reported.feedback_type == "abuse"


def test_a_long_smtp_answer_is_cut_short_not_refused() -> None:
    event = ses_event("bounce", SENT)
    event["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "smtp; 550 5.1.1 " + "gone\n" * 20_000
    event["mail"]["headers"].append({"name": "X-Long", "value": "v" * 50_000})
    reported = ses.ses_event(ses.sns_message(SNS_SIGNER.signed(sns_notification(event), CERT_URL)))
    assert (reported.kind, reported.status, len(reported.diagnostic)) == ("hard_bounce", "5.1.1", 1000)
    assert "\n" not in reported.diagnostic


def test_configuration_set_events_and_kinds_we_do_not_use() -> None:
    event = ses_event("bounce", SENT)
    published = {"eventType": "Bounce", **{k: v for k, v in event.items() if k != "notificationType"}}
    message = ses.sns_message(SNS_SIGNER.signed(sns_notification(published), CERT_URL))
    assert ses.ses_event(message).kind == "hard_bounce"
    opened = {"eventType": "Open", "mail": event["mail"], "open": {"ipAddress": "192.0.2.1"}}
    message = ses.sns_message(SNS_SIGNER.signed(sns_notification(opened), CERT_URL))
    assert ses.ses_event(message).kind == "unrelated"


@pytest.mark.parametrize(
    "event",
    [
        "not json",
        {"notificationType": "Bounce", "mail": {"messageId": "x"}},  # no bounce object
        {"mail": {"messageId": "x"}},  # no kind
        {"notificationType": "Bounce", "bounce": {"bounceType": "Sometimes"}, "mail": {"messageId": "x"}},
        {"notificationType": "Delivery", "delivery": {"recipients": []}, "mail": {"messageId": "x"}},
        ["a", "list"],
    ],
)
def test_an_sns_message_that_is_no_ses_event_is_malformed(event: Any) -> None:
    fields = sns_notification({})
    fields["Message"] = event if isinstance(event, str) else json.dumps(event)
    with refused(422, "malformed"):
        ses.ses_event(ses.sns_message(SNS_SIGNER.signed(fields, CERT_URL)))


# ── SendGrid ───────────────────────────────────────────────────────────────────────────────────────────

SENDGRID = SendGridSigner()
SENDGRID_KEY = esp.sendgrid_key(SENDGRID.verification_key)


def test_a_sendgrid_batch_signed_with_the_key_verifies_and_reads_each_event() -> None:
    body = json.dumps(sendgrid_events("bounce", SENT) + sendgrid_events("complaint", SENT)).encode()
    headers, body = SENDGRID.signed(body)
    sendgrid.verify(SENDGRID_KEY, {k.lower(): v for k, v in headers.items()}, body, now(), AGE)
    kinds = [(event.kind, event.names) for event in sendgrid.events(body)]
    assert kinds == [
        ("unrelated", NAMES),
        ("hard_bounce", NAMES),
        ("unrelated", NAMES),
        ("complaint", NAMES[:1]),  # a spam report has no smtp-id: our custom argument names it
    ]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_change_to_a_signed_sendgrid_body_or_timestamp_is_refused(data: st.DataObject) -> None:
    headers, body = SENDGRID.signed(json.dumps(sendgrid_events("bounce", SENT)).encode())
    lowered = {k.lower(): v for k, v in headers.items()}
    if data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ data.draw(st.integers(1, 255))]) + body[at + 1 :]
    else:
        lowered[sendgrid.TIMESTAMP_HEADER] = str(
            int(lowered[sendgrid.TIMESTAMP_HEADER]) + data.draw(st.integers(1))
        )
    with refused(401, "unauthorized"):
        sendgrid.verify(SENDGRID_KEY, lowered, body, now(), AGE)


def test_a_sendgrid_request_signed_long_ago_or_unsigned_is_refused() -> None:
    headers, body = SENDGRID.signed(b"[]", now() - timedelta(minutes=6))
    with refused(401, "expired"):
        sendgrid.verify(SENDGRID_KEY, {k.lower(): v for k, v in headers.items()}, body, now(), AGE)
    for missing in ({}, {sendgrid.SIGNATURE_HEADER: "x", sendgrid.TIMESTAMP_HEADER: "１２"}):
        with refused(401, "unauthorized"):
            sendgrid.verify(SENDGRID_KEY, missing, body, now(), AGE)


def test_sendgrid_kinds() -> None:
    soft = sendgrid_events("bounce", SENT, permanent=False)[1]
    deferred = {**soft, "event": "deferred"}
    delivered = sendgrid_events("delivery", SENT)[1]
    body = json.dumps([soft, deferred, delivered, {**delivered, "event": "click"}]).encode()
    assert [e.kind for e in sendgrid.events(body)] == ["soft_bounce", "soft_bounce", "delivery", "unrelated"]
    for bad in (b"{}", b'[{"event": "bounce"}]', b'[{"event": 1, "sg_event_id": "x"}]'):
        with refused(422, "malformed"):
            sendgrid.events(bad)


def test_only_a_p256_public_key_is_a_sendgrid_key() -> None:
    pem = SENDGRID.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert esp.sendgrid_key(pem.decode()).curve.name == "secp256r1"
    rsa_key = rsa.generate_private_key(65537, 2048).public_key()
    rsa_der = rsa_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for text in (base64.b64encode(rsa_der).decode(), "not base64 !", base64.b64encode(b"junk").decode(), ""):
        with pytest.raises(ValueError, match="key"):
            esp.sendgrid_key(text)


# ── Mailgun ────────────────────────────────────────────────────────────────────────────────────────────

MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


@pytest.mark.parametrize(
    ("kind", "permanent", "expected", "status"),
    [
        ("bounce", True, "hard_bounce", "5.1.1"),
        ("bounce", False, "soft_bounce", "4.2.2"),
        ("complaint", True, "complaint", None),
        ("delivery", True, "delivery", None),
    ],
)
def test_a_mailgun_event_signed_with_the_key_verifies_and_is_classified(
    kind: str, permanent: bool, expected: str, status: str | None
) -> None:
    _, body = mailgun_request(MAILGUN_KEY, kind, SENT, permanent=permanent)
    signed = mailgun.post(body)
    mailgun.verify(MAILGUN_KEY, signed, now(), AGE)
    event = mailgun.event(signed)
    assert (event.kind, event.names, event.status) == (expected, NAMES[1:], status)
    assert event.event_id == json.loads(body)["event-data"]["id"]


def test_a_mailgun_signature_of_another_key_too_old_or_mangled_is_refused() -> None:
    with refused(401, "unauthorized"):
        signed = mailgun.post(mailgun_request(MAILGUN_KEY, "bounce", SENT)[1])
        mailgun.verify("another-key", signed, now(), AGE)
    old = mailgun.post(mailgun_request(MAILGUN_KEY, "bounce", SENT, at=now() - timedelta(minutes=6))[1])
    with refused(401, "expired"):
        mailgun.verify(MAILGUN_KEY, old, now(), AGE)
    mangled = json.loads(mailgun_request(MAILGUN_KEY, "bounce", SENT)[1])
    mangled["signature"]["signature"] = "é" * 64  # not ASCII: compared as bytes, never a crash
    with refused(401, "unauthorized"):
        mailgun.verify(MAILGUN_KEY, mailgun.post(json.dumps(mangled).encode()), now(), AGE)
    for broken in ({"event-data": {}}, {"signature": {"timestamp": "x", "token": "t", "signature": "s"}}):
        with refused(422, "malformed"):
            mailgun.post(json.dumps(broken).encode())


# ── Postmark ───────────────────────────────────────────────────────────────────────────────────────────


def test_postmark_takes_only_its_basic_auth() -> None:
    postmark.verify(
        "maildash",
        "a-long-random-password",
        basic_auth("maildash", "a-long-random-password")["Authorization"],
    )
    for header in (
        basic_auth("maildash", "wrong-password")["Authorization"],
        basic_auth("other", "a-long-random-password")["Authorization"],
        "Bearer a-long-random-password",
        "Basic %%%",
        "Basic " + base64.b64encode(b"\xff\xfe").decode(),
        "",
    ):
        with refused(401, "unauthorized"):
            postmark.verify("maildash", "a-long-random-password", header)


@pytest.mark.parametrize(("kind", "permanent", "expected"), KINDS)
def test_postmark_events_are_classified_and_named_by_our_metadata(
    kind: str, permanent: bool, expected: str
) -> None:
    body = postmark_event(kind, SENT, permanent=permanent)
    event = postmark.event(body, now(), AGE)
    assert (event.kind, event.names) == (expected, NAMES[:1])
    fields = json.loads(body)
    assert event.event_id == (
        f"Delivery:{fields['MessageID']}:jan@lead.example"
        if kind == "delivery"
        else f"{fields['RecordType']}:{fields['ID']}"
    )


def test_a_postmark_event_from_long_ago_or_without_its_fields_is_refused() -> None:
    with refused(401, "expired"):
        postmark.event(postmark_event("bounce", SENT, at=now() - timedelta(minutes=6)), now(), AGE)
    bounce = json.loads(postmark_event("bounce", SENT))
    for broken in ({**bounce, "ID": None}, {**bounce, "BouncedAt": "yesterday"}, {"RecordType": "Delivery"}):
        with refused(422, "malformed"):
            postmark.event(json.dumps(broken).encode(), now(), AGE)
    auto = {**bounce, "Type": "AutoResponder"}
    assert postmark.event(json.dumps(auto).encode(), now(), AGE).kind == "unrelated"


# ── what our e-mail carries ─────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("host", "extra"),
    [
        ("smtp.example.com", []),
        ("email-smtp.eu-west-1.amazonaws.com", []),
        ("smtp.postmarkapp.com", [("X-PM-Metadata-maildash-message", OURS)]),
        ("SMTP-Broadcasts.PostmarkApp.com.", [("X-PM-Metadata-maildash-message", OURS)]),
        (
            "smtp.sendgrid.net",
            [("X-SMTPAPI", json.dumps({"unique_args": {"maildash-message": OURS}}, separators=(",", ":")))],
        ),
        ("postmarkapp.com.evil.example", []),
    ],
)
def test_mail_names_its_message_where_the_relays_esp_returns_it(
    host: str, extra: list[tuple[str, str]]
) -> None:
    assert esp.tagging_headers(host, OURS) == [("X-Maildash-Message", OURS), *extra]
