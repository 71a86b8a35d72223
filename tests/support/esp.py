"""ESP webhook requests as each provider documents them, signed with keys the test generates, and a local
HTTPS server in SNS's place (signing certificate, subscription confirmations).

Shapes follow the providers' documentation: Amazon SES event notifications inside SNS HTTP(S) messages,
SendGrid's Event Webhook (signed: ECDSA P-256 over timestamp + body), Mailgun's webhooks (HMAC-SHA256 of
timestamp + token) and Postmark's bounce, spam complaint and delivery webhooks (basic auth in the URL). The
SNS string to sign is written here from AWS's documentation, independently of the tracker's own.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.support.tls import TlsFiles
from tools.smtp_sink import Received

Request = tuple[dict[str, str], bytes]  # headers and body
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
CERT_PATH = "/SimpleNotificationService-7ff5318490ec183fbaddaa2a969abfda.pem"


def now() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def stamp(at: datetime.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Sent:
    """What a provider knows of an e-mail it relayed: its headers and recipient."""

    message_id: str  # the Message-ID header, with its angle brackets
    ours: str  # X-Maildash-Message
    recipient: str
    headers: list[tuple[str, str]]

    @classmethod
    def of(cls, mail: Received) -> Sent:
        email = mail.message
        headers = [(name, str(value)) for name, value in email.items()]
        return cls(str(email["Message-ID"]), str(email["X-Maildash-Message"]), mail.rcpt_tos[0], headers)


# ── Amazon SES through SNS ─────────────────────────────────────────────────────────────────────────────


def ses_event(kind: str, sent: Sent, permanent: bool = True) -> dict[str, Any]:
    """An SES event notification (`notificationType`), as AWS documents its Bounce, Complaint and Delivery."""
    at = stamp(now())
    mail = {
        "timestamp": at,
        "source": "sales@outreach.example",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/outreach.example",
        "sourceIp": "203.0.113.7",
        "sendingAccountId": "123456789012",
        "messageId": f"0102018f{secrets.token_hex(8)}-{uuid.uuid4()}-000000",
        "destination": [sent.recipient],
        "headersTruncated": False,
        "headers": [{"name": name, "value": value} for name, value in sent.headers],
        "commonHeaders": {"to": [sent.recipient], "messageId": sent.message_id, "subject": "Hello"},
    }
    feedback = f"0102018f{secrets.token_hex(8)}-{uuid.uuid4()}-000000"
    if kind == "bounce":
        status = "5.1.1" if permanent else "4.4.7"
        body: dict[str, Any] = {
            "bounceType": "Permanent" if permanent else "Transient",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": sent.recipient,
                    "action": "failed",
                    "status": status,
                    "diagnosticCode": f"smtp; 550 {status} <{sent.recipient}>: Recipient address rejected",
                }
            ],
            "timestamp": at,
            "feedbackId": feedback,
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com",
        }
        return {"notificationType": "Bounce", "bounce": body, "mail": mail}
    if kind == "complaint":
        body = {
            "userAgent": "ExampleCorp Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": sent.recipient}],
            "complaintFeedbackType": "abuse",
            "arrivalDate": at,
            "timestamp": at,
            "feedbackId": feedback,
        }
        return {"notificationType": "Complaint", "complaint": body, "mail": mail}
    body = {
        "timestamp": at,
        "processingTimeMillis": 546,
        "recipients": [sent.recipient],
        "smtpResponse": "250 ok:  Message 64111812 accepted",
        "reportingMTA": "a8-70.smtp-out.amazonses.com",
    }
    return {"notificationType": "Delivery", "delivery": body, "mail": mail}


def sns_string_to_sign(message: dict[str, str]) -> bytes:
    """AWS: the fields in this order, each as name, newline, value, newline; Subject only when present."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{name}\n{message[name]}\n" for name in names if name in message).encode()


@dataclass
class SnsSigner:
    """An RSA key and the certificate SNS would publish for it."""

    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    @property
    def certificate(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        at = now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(at - timedelta(days=1))
            .not_valid_after(at + timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM)

    def signed(self, message: dict[str, str], certificate_url: str, version: str = "1") -> bytes:
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 -- SNS's version 1
        signature = self.key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
        message = {
            **message,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": certificate_url,
        }
        return json.dumps(message).encode()


def sns_notification(
    event: dict[str, Any], at: datetime.datetime | None = None, **extra: str
) -> dict[str, str]:
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": TOPIC,
        "Message": json.dumps(event),
        "Timestamp": stamp(at or now()),
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        **extra,
    }


def sns_confirmation(subscribe_url: str, token: str, topic: str = TOPIC) -> dict[str, str]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.\nTo confirm the subscription, "
        "visit the SubscribeURL included in this message.",
        "SubscribeURL": subscribe_url,
        "Timestamp": stamp(now()),
    }


class SnsServer:
    """HTTPS in SNS's place: the signing certificate, and subscription confirmations (each GET recorded)."""

    def __init__(self, tls: TlsFiles, signer: SnsSigner) -> None:
        self.requests: list[str] = []
        certificate = signer.certificate
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                if self.path == CERT_PATH:
                    self._answer(200, certificate, "application/x-pem-file")
                elif self.path.startswith("/?Action=ConfirmSubscription"):
                    answer = b"<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>"
                    self._answer(200, answer + TOPIC.encode() + b":1</SubscriptionArn>", "text/xml")
                else:
                    self._answer(404, b"not found", "text/plain")

            def _answer(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.certificate, tls.key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"

    @contextlib.contextmanager
    def running(self) -> Iterator[SnsServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()

    @property
    def certificate_url(self) -> str:
        return self.url + CERT_PATH

    def subscribe_url(self, token: str) -> str:
        return f"{self.url}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token={token}"


# ── SendGrid ───────────────────────────────────────────────────────────────────────────────────────────


@dataclass
class SendGridSigner:
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def verification_key(self) -> str:
        """As SendGrid shows it: base64 of the DER public key."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def signed(self, body: bytes, at: datetime.datetime | None = None) -> Request:
        timestamp = str(int((at or now()).timestamp()))
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        }
        return headers, body


def sendgrid_events(kind: str, sent: Sent, permanent: bool = True) -> list[dict[str, Any]]:
    """A batch as SendGrid posts it: the event, after a `processed` one we do not use."""
    common = {
        "email": sent.recipient,
        "timestamp": int(now().timestamp()),
        "smtp-id": sent.message_id,
        "category": ["outreach"],
        "sg_message_id": f"{secrets.token_urlsafe(16)}.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
        "maildash-message": sent.ours,  # our custom argument (X-SMTPAPI unique_args)
    }
    processed = {**common, "event": "processed", "sg_event_id": secrets.token_urlsafe(16)}
    event = {**common, "sg_event_id": secrets.token_urlsafe(16)}
    if kind == "bounce":
        event |= {
            "event": "bounce",
            "reason": "550 5.1.1 The email account does not exist.",
            "status": "5.1.1",
        }
        event |= {"type": "bounce"} if permanent else {"type": "blocked", "status": "4.7.1"}
    elif kind == "complaint":  # a spam report carries no smtp-id
        event = {k: v for k, v in event.items() if k != "smtp-id"} | {"event": "spamreport"}
    else:
        event |= {"event": "delivered", "response": "250 OK", "ip": "168.1.1.1", "tls": 1}
    return [processed, event]


# ── Mailgun ────────────────────────────────────────────────────────────────────────────────────────────


def mailgun_request(
    signing_key: str,
    kind: str,
    sent: Sent,
    at: datetime.datetime | None = None,
    permanent: bool = True,
) -> Request:
    timestamp = str(int((at or now()).timestamp()))
    data: dict[str, Any] = {
        "id": secrets.token_urlsafe(16),
        "timestamp": float(timestamp),
        "log-level": "error",
        "recipient": sent.recipient,
        "recipient-domain": sent.recipient.split("@")[1],
        "tags": [],
        "user-variables": {},
        "envelope": {"sender": "bounce@outreach.example", "transport": "smtp", "targets": sent.recipient},
        "message": {
            "headers": {"to": sent.recipient, "message-id": sent.message_id.strip("<>"), "subject": "Hello"},
            "attachments": [],
            "size": 1811,
        },
    }
    if kind == "bounce":
        code = "5.1.1" if permanent else "4.2.2"
        data |= {
            "event": "failed",
            "severity": "permanent" if permanent else "temporary",
            "reason": "bounce" if permanent else "generic",
            "delivery-status": {
                "attempt-no": 1,
                "code": 550 if permanent else 452,
                "message": f"{code} The email account that you tried to reach does not exist.",
                "description": "",
                "mx-host": "mx.lead.example",
            },
        }
    elif kind == "complaint":
        data |= {"event": "complained", "log-level": "warn"}
    else:
        data |= {"event": "delivered", "log-level": "info", "delivery-status": {"code": 250, "message": "OK"}}
    body = {"signature": mailgun_signature(signing_key, timestamp), "event-data": data}
    return {"Content-Type": "application/json"}, json.dumps(body).encode()


def mailgun_signature(
    signing_key: str, timestamp: str | None = None, token: str | None = None
) -> dict[str, str]:
    """Mailgun's `signature` object: a fresh token (unless given), signed now (unless dated)."""
    timestamp = timestamp or str(int(now().timestamp()))
    token = token or secrets.token_hex(25)
    signature = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": signature}


# ── Postmark ───────────────────────────────────────────────────────────────────────────────────────────


def postmark_event(
    kind: str, sent: Sent, at: datetime.datetime | None = None, permanent: bool = True
) -> bytes:
    moment = (at or now()).isoformat()
    common = {
        "MessageID": str(uuid.uuid4()),
        "ServerID": 23,
        "MessageStream": "outbound",
        "Tag": "outreach",
        "Metadata": {"maildash-message": sent.ours},  # from X-PM-Metadata-maildash-message
    }
    if kind == "delivery":
        event = {
            "RecordType": "Delivery",
            "Recipient": sent.recipient,
            "DeliveredAt": moment,
            "Details": "OK",
        }
        return json.dumps({**common, **event}).encode()
    event = {
        "ID": secrets.randbelow(10**10),
        "Email": sent.recipient,
        "From": "sales@outreach.example",
        "BouncedAt": moment,
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Hello",
        "Content": "",
    }
    if kind == "complaint":
        event |= {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "TypeCode": 512}
        event |= {"Name": "Spam complaint", "Description": "The subscriber explicitly marked this as spam."}
    elif permanent:
        event |= {"RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce"}
        event |= {"Description": "The server was unable to deliver your message (ex: unknown user, mailbox "}
        event |= {"Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist."}
    else:
        event |= {"RecordType": "Bounce", "Type": "Transient", "TypeCode": 2, "Name": "Message delayed"}
        event |= {"Details": "smtp;421 4.4.2 Connection timed out"}
    return json.dumps({**common, **event}).encode()


def basic_auth(username: str, password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}", "Content-Type": "application/json"}
