"""ESP event webhooks through the real tracker: e-mails really sent (scheduler, sender, SMTP sink), each ESP's
webhook configured through the api, and its events posted over HTTP as the provider documents them, signed
with keys generated here. SNS's signing certificate and subscription confirmations come from a local HTTPS
server that `MAILDASH_SNS_HOST_PATTERN` and `MAILDASH_SNS_CA_FILE` point the tracker at."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.scheduler.main import create_app as create_scheduler
from services.sender.main import create_app as create_sender
from services.tracker.main import create_app as create_tracker
from shared.db import create_engine, session_factory
from shared.settings import Settings
from tests.support import esp
from tests.support.api import ApiClient, new_workspace
from tests.support.clock import MovableClock
from tests.support.esp import Request, Sent
from tests.support.pipeline import Pipeline
from tests.support.smtp import free_port, running_sink
from tests.support.stack import inprocess_service
from tests.support.tls import self_signed

pytestmark = pytest.mark.integration

PROVIDERS = ["ses", "sendgrid", "mailgun", "postmark"]
MAILGUN_KEY = "key-" + secrets.token_hex(16)
POSTMARK_USER, POSTMARK_PASSWORD = "maildash", secrets.token_urlsafe(24)
STALE = timedelta(minutes=6)  # MAILDASH_ESP_MAX_AGE_SECONDS is 300


@dataclass
class World:
    pipeline: Pipeline
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    sns: esp.SnsServer
    sns_signer: esp.SnsSigner
    sendgrid: esp.SendGridSigner
    paths: dict[str, str]  # provider → the path of this workspace's webhook at the tracker
    hooks: dict[str, dict[str, Any]]  # provider → the api's answer
    impostor_sns: esp.SnsSigner  # keys that are not the configured ones
    impostor_sendgrid: esp.SendGridSigner

    def speak(
        self,
        provider: str,
        kind: str,
        sent: Sent,
        at: Any = None,
        forged: bool = False,
        permanent: bool = True,
    ) -> Request:
        """The provider's request for one event about `sent`, authenticated as it would be (or `forged`)."""
        if provider == "ses":
            fields = esp.sns_notification(esp.ses_event(kind, sent, permanent), at)
            signer = self.impostor_sns if forged else self.sns_signer
            return {"Content-Type": "text/plain; charset=UTF-8"}, signer.signed(
                fields, self.sns.certificate_url
            )
        if provider == "sendgrid":
            body = json.dumps(esp.sendgrid_events(kind, sent, permanent)).encode()
            return (self.impostor_sendgrid if forged else self.sendgrid).signed(body, at)
        if provider == "mailgun":
            return esp.mailgun_request("key-not-ours" if forged else MAILGUN_KEY, kind, sent, at, permanent)
        password = "not-the-password" if forged else POSTMARK_PASSWORD
        return esp.basic_auth(POSTMARK_USER, password), esp.postmark_event(kind, sent, at, permanent)

    def again(self, provider: str, request: Request) -> Request:
        """The same event delivered again: SNS, SendGrid, Postmark repeat the request; Mailgun signs anew."""
        if provider != "mailgun":
            return request
        body = json.loads(request[1]) | {"signature": esp.mailgun_signature(MAILGUN_KEY)}
        return request[0], json.dumps(body).encode()

    async def post(self, provider: str, request: Request, path: str | None = None) -> httpx.Response:
        headers, body = request
        async with httpx.AsyncClient(base_url=self.pipeline.tracker_url, timeout=30) as client:
            return await client.post(path or self.paths[provider], content=body, headers=headers)

    async def recorded(self, message_id: str) -> tuple[list[str], int]:
        """The message's history (kinds, oldest first) and how many ESP events took effect on it."""
        async with self.sessions() as session:
            kinds = await session.scalars(
                text("SELECT kind FROM message_events WHERE message_id = :m ORDER BY occurred_at, id"),
                {"m": uuid.UUID(message_id)},
            )
            taken = await session.scalar(
                text("SELECT count(*) FROM esp_events WHERE message_id = :m"), {"m": uuid.UUID(message_id)}
            )
            return list(kinds), int(taken or 0)

    async def sent(self) -> tuple[dict[str, Any], Sent]:
        message, mail = await self.pipeline.sent_email()
        return message, Sent.of(mail)


async def configure(api: ApiClient, sendgrid: esp.SendGridSigner) -> dict[str, Any]:
    bodies = {
        "ses": {"topic_arns": [esp.TOPIC]},
        "sendgrid": {"public_key": sendgrid.verification_key},
        "mailgun": {"signing_key": MAILGUN_KEY},
        "postmark": {"username": POSTMARK_USER, "password": POSTMARK_PASSWORD},
    }
    return {
        provider: await api.create("/esp-webhooks", {"provider": provider, **body})
        for provider, body in bodies.items()
    }


@pytest.fixture(scope="module")
async def world(
    api_url: str, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    tls = self_signed(tmp_path_factory.mktemp("sns"))
    sns_signer, sendgrid = esp.SnsSigner(), esp.SendGridSigner()
    tracker_port = free_port()
    tuned = settings.model_copy(
        update={
            "sns_host_pattern": r"127\.0\.0\.1",
            "sns_ca_file": str(tls.certificate),
            "tracker_port": tracker_port,
            "public_tracker_url": f"http://127.0.0.1:{tracker_port}",
        }
    )
    clock = MovableClock()
    engine = create_engine(settings.database_url, pool_size=2)
    with esp.SnsServer(tls, sns_signer).running() as sns:
        async with AsyncExitStack() as stack:
            sink = await stack.enter_async_context(running_sink())
            for create_app in (create_scheduler, create_sender):
                await stack.enter_async_context(
                    inprocess_service(create_app, tuned, free_port(), clock=clock)
                )
            tracker_url = await stack.enter_async_context(
                inprocess_service(create_tracker, tuned, tracker_port, clock=clock)
            )
            api = await stack.enter_async_context(await new_workspace(api_url, f"esp-{uuid.uuid4().hex[:8]}"))
            hooks = await configure(api, sendgrid)
            yield World(
                Pipeline(api, sink, clock, tracker_url, tuned), settings, session_factory(engine), sns,
                sns_signer, sendgrid, {p: urlsplit(hook["url"]).path for p, hook in hooks.items()}, hooks,
                esp.SnsSigner(), esp.SendGridSigner(),
            )  # fmt: skip
    await engine.dispose()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_refused_requests_record_nothing_and_a_genuine_bounce_counts_once(
    world: World, provider: str
) -> None:
    message, sent = await world.sent()
    refusals = {
        "forged": (world.speak(provider, "bounce", sent, forged=True), 401, "unauthorized"),
        "replayed": (world.speak(provider, "bounce", sent, at=esp.now() - STALE), 401, "expired"),
    }
    for case, (request, status, code) in refusals.items():
        answer = await world.post(provider, request)
        assert (answer.status_code, answer.json()["error_code"]) == (status, code), (case, answer.text)
        assert answer.json()["data"] is None
    assert await world.recorded(message["id"]) == (["sent"], 0)
    assert (await world.pipeline.api.get(f"/leads/{message['lead_id']}"))["status"] == "active"

    bounce = world.speak(provider, "bounce", sent)
    first = await world.post(provider, bounce)
    assert first.status_code == 200, first.text
    [effect] = [e for e in first.json()["data"]["events"] if e["outcome"] != "unrelated"]
    assert (effect["outcome"], effect["message_id"], effect["recorded"]) == (
        "hard_bounce",
        message["id"],
        True,
    )
    again = await world.post(provider, world.again(provider, bounce))
    assert again.status_code == 200, again.text
    assert [e["recorded"] for e in again.json()["data"]["events"]] == [False] * len(
        again.json()["data"]["events"]
    )

    assert await world.recorded(message["id"]) == (["sent", "bounced"], 1)
    [after] = await world.pipeline.messages(message["campaign_id"])
    assert after["status"] == "bounced"
    assert (await world.pipeline.api.get(f"/leads/{message['lead_id']}"))["status"] == "bounced"
    suppressed = await world.pipeline.api.get(f"/suppressions?search={sent.recipient}")
    assert suppressed["total"] == 1
    kpis = (await world.pipeline.api.get(f"/campaigns/{message['campaign_id']}"))["kpis"]
    assert (kpis["total_sent"], kpis["total_bounced"]) == (1, 1)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_soft_bounces_and_deliveries_are_history_and_a_complaint_marks_the_lead(
    world: World, provider: str, capfd: pytest.CaptureFixture[str]
) -> None:
    message, sent = await world.sent()
    for kind, permanent, outcome in (("bounce", False, "soft_bounce"), ("delivery", True, "delivery")):
        request = world.speak(provider, kind, sent, permanent=permanent)
        # Delivered twice: only the event id tells the copy from a new event (history has no guard).
        for recorded in (True, False):
            answer = await world.post(provider, world.again(provider, request) if not recorded else request)
            assert answer.status_code == 200, answer.text
            [effect] = [e for e in answer.json()["data"]["events"] if e["outcome"] != "unrelated"]
            assert (effect["outcome"], effect["recorded"]) == (outcome, recorded), answer.text
    assert (await world.pipeline.api.get(f"/leads/{message['lead_id']}"))["status"] == "active"

    complaint = await world.post(provider, world.speak(provider, "complaint", sent))
    assert complaint.status_code == 200, complaint.text
    [effect] = [e for e in complaint.json()["data"]["events"] if e["outcome"] != "unrelated"]
    assert (effect["outcome"], effect["message_id"], effect["recorded"]) == ("complaint", message["id"], True)
    assert await world.recorded(message["id"]) == (["sent", "soft_bounced", "delivered", "complained"], 3)
    assert (await world.pipeline.api.get(f"/leads/{message['lead_id']}"))["status"] == "complained"
    assert (await world.pipeline.api.get(f"/suppressions?search={sent.recipient}"))["total"] == 1
    [after] = await world.pipeline.messages(message["campaign_id"])
    assert after["status"] == "sent"
    kpis = (await world.pipeline.api.get(f"/campaigns/{message['campaign_id']}"))["kpis"]
    assert kpis["total_complained"] == 1

    logged = "".join(capfd.readouterr())
    assert "tracker.esp.received" in logged  # the tracker's log of these requests is what is searched
    credentials = esp.basic_auth(POSTMARK_USER, POSTMARK_PASSWORD)["Authorization"].split()[1]
    token = world.paths[provider].rsplit("/", 1)[1]
    for secret in (MAILGUN_KEY, POSTMARK_PASSWORD, credentials, token):
        assert secret not in logged


MALFORMED: dict[str, list[bytes]] = {
    "ses": [b"not json", b'{"Type": "Notification"}', b"[" * 5000 + b"]" * 5000],
    "sendgrid": [b"{not json", b'{"event": "bounce"}', b'[{"event": "bounce"}]', b"[" * 5000 + b"]" * 5000],
    "mailgun": [b"not json", b'{"signature": {}}', b"\xff\xfe"],
    "postmark": [b"not json", b'{"RecordType": "Bounce"}', b'{"RecordType": "Delivery", "DeliveredAt": 3}'],
}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_malformed_payloads_are_422_and_record_nothing(world: World, provider: str) -> None:
    before = await esp_events(world)
    for body in MALFORMED[provider]:
        if provider == "sendgrid":  # signed: the payload, not the signature, is what is wrong
            headers, body = world.sendgrid.signed(body)
        elif provider == "postmark":
            headers = esp.basic_auth(POSTMARK_USER, POSTMARK_PASSWORD)
        else:
            headers = {"Content-Type": "application/json"}
        answer = await world.post(provider, (headers, body))
        assert (answer.status_code, answer.json()["error_code"]) == (422, "malformed"), (
            body[:40],
            answer.text,
        )
    if provider == "ses":  # signed by SNS, but what it carries is no SES event
        fields = esp.sns_notification({"eventType": "Bounce", "mail": {}})
        answer = await world.post(provider, ({}, world.sns_signer.signed(fields, world.sns.certificate_url)))
        assert answer.status_code == 422, answer.text
    assert await esp_events(world) == before


async def esp_events(world: World) -> int:
    async with world.sessions() as session:
        return int(await session.scalar(text("SELECT count(*) FROM esp_events")) or 0)


async def test_an_sns_subscription_is_confirmed_only_for_a_named_topic_and_sns_hosts(world: World) -> None:
    token = secrets.token_hex(32)
    confirmation = esp.sns_confirmation(world.sns.subscribe_url(token), token)
    answer = await world.post(
        "ses", ({}, world.sns_signer.signed(confirmation, world.sns.certificate_url, "2"))
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"events": [], "subscription": "confirmed"}
    confirmed = world.sns.subscribe_url(token).removeprefix(world.sns.url)
    assert [path for path in world.sns.requests if token in path] == [confirmed]
    assert world.sns.requests.count(esp.CERT_PATH) == 1  # fetched once, then kept

    seen = len(world.sns.requests)
    other_topic = esp.sns_confirmation(world.sns.subscribe_url(token), token, topic=esp.TOPIC + "-other")
    refused = await world.post("ses", ({}, world.sns_signer.signed(other_topic, world.sns.certificate_url)))
    assert (refused.status_code, refused.json()["error_code"]) == (403, "forbidden")
    elsewhere = world.sns.url.replace("127.0.0.1", "localhost")  # the same server, not an allowed host
    for subscribe_url, certificate_url in (
        (f"{elsewhere}/?Action=ConfirmSubscription&Token={token}", world.sns.certificate_url),
        (world.sns.subscribe_url(token), elsewhere + esp.CERT_PATH),
    ):
        signed = world.sns_signer.signed(esp.sns_confirmation(subscribe_url, token), certificate_url)
        refused = await world.post("ses", ({}, signed))
        assert (refused.status_code, refused.json()["error_code"]) == (401, "unauthorized"), refused.text
    assert len(world.sns.requests) == seen  # nothing was fetched for any of them


async def test_an_event_about_an_email_still_being_sent_is_taken_later(world: World) -> None:
    """An ESP may report a bounce before the sender has recorded that the ESP took the e-mail: 503, so the
    ESP delivers it again, and nothing taken meanwhile (the event id would otherwise be spent)."""
    message, sent = await world.sent()
    await set_status(world, message["id"], "sending")  # as between the ESP's 250 and the sender's commit
    request = world.speak("sendgrid", "bounce", sent)
    early = await world.post("sendgrid", request)
    assert (early.status_code, early.headers["retry-after"]) == (503, "5"), early.text
    assert await world.recorded(message["id"]) == (["sent"], 0)
    await set_status(world, message["id"], "sent")
    later = await world.post("sendgrid", request)
    assert later.status_code == 200, later.text
    assert await world.recorded(message["id"]) == (["sent", "bounced"], 1)


async def set_status(world: World, message_id: str, status: str) -> None:
    async with world.sessions() as session, session.begin():
        await session.execute(
            text("UPDATE messages SET status = :s WHERE id = :m"), {"s": status, "m": uuid.UUID(message_id)}
        )


async def test_a_mailgun_signature_is_taken_once(world: World) -> None:
    message, sent = await world.sent()
    request = world.speak("mailgun", "delivery", sent)
    assert (await world.post("mailgun", request)).status_code == 200
    replayed = await world.post("mailgun", request)
    assert (replayed.status_code, replayed.json()["error_code"]) == (401, "replayed")
    # The signature signs no event: the same one on another event is refused just as well.
    body = json.loads(request[1])
    body["event-data"] = json.loads(world.speak("mailgun", "complaint", sent)[1])["event-data"]
    swapped = await world.post("mailgun", (request[0], json.dumps(body).encode()))
    assert swapped.status_code == 401
    assert await world.recorded(message["id"]) == (["sent", "delivered"], 1)


async def test_a_workspace_webhook_never_reaches_another_workspaces_messages(
    world: World, api_url: str
) -> None:
    message, sent = await world.sent()
    signer = esp.SendGridSigner()
    async with await new_workspace(api_url, f"esp-other-{uuid.uuid4().hex[:8]}") as other:
        hook = await other.create(
            "/esp-webhooks", {"provider": "sendgrid", "public_key": signer.verification_key}
        )
        request = signer.signed(json.dumps(esp.sendgrid_events("bounce", sent)).encode())
        path = urlsplit(hook["url"]).path
        answer = await world.post("sendgrid", request, path=path)
        assert answer.status_code == 200, answer.text
        assert {e["outcome"] for e in answer.json()["data"]["events"]} == {"unrelated", "unmatched"}
        assert await world.recorded(message["id"]) == (["sent"], 0)
        assert (await other.http.delete(f"/esp-webhooks/{hook['id']}")).status_code == 200
    gone = await world.post("sendgrid", request, path=path)
    assert (gone.status_code, gone.json()["error_code"]) == (404, "not_found")


async def test_urls_that_name_no_webhook_and_oversized_bodies(world: World) -> None:
    path = world.paths["postmark"]
    for wrong in (
        path[:-1] + ("A" if path[-1] != "A" else "B"),
        path.replace("postmark", "mailgun"),
        "/webhooks/esp/sparkpost/" + "a" * 32,
        "/webhooks/esp/postmark/%00",
    ):
        answer = await world.post(
            "postmark", (esp.basic_auth(POSTMARK_USER, POSTMARK_PASSWORD), b"{}"), path=wrong
        )
        assert (answer.status_code, answer.json()["error_code"]) == (404, "not_found"), wrong
    huge = await world.post("sendgrid", ({}, b"[" + b" " * (2 * 1024 * 1024) + b"]"))
    assert (huge.status_code, huge.json()["error_code"]) == (413, "payload_too_large")


async def test_the_api_keeps_each_webhooks_secrets_and_checks_what_it_takes(world: World) -> None:
    api = world.pipeline.api
    listed = await api.get("/esp-webhooks")
    assert {hook["provider"] for hook in listed["items"]} == set(PROVIDERS)
    shown = json.dumps(listed) + json.dumps(await api.get(f"/esp-webhooks/{world.hooks['mailgun']['id']}"))
    assert MAILGUN_KEY not in shown
    assert POSTMARK_PASSWORD not in shown
    postmark = world.hooks["postmark"]
    assert (postmark["username"], postmark["has_password"], postmark["has_signing_key"]) == (
        POSTMARK_USER,
        True,
        False,
    )
    assert world.hooks["ses"]["topic_arns"] == [esp.TOPIC]
    for body, field in (
        ({"provider": "ses"}, "topic_arns"),
        ({"provider": "ses", "topic_arns": ["arn:aws:sqs:eu-west-1:123456789012:queue"]}, "topic_arns"),
        ({"provider": "mailgun", "signing_key": "x" * 20, "password": "y" * 20}, "password"),
        ({"provider": "sendgrid", "public_key": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"}, "public_key"),
        ({"provider": "postmark", "username": "a:b", "password": "p" * 20}, "username"),
        ({"provider": "sparkpost"}, "provider"),
    ):
        refused = await api.http.post("/esp-webhooks", json=body)
        assert refused.status_code == 422, refused.text
        assert field in json.dumps(refused.json()["fields"]), refused.text
    duplicate = await api.http.post("/esp-webhooks", json={"provider": "ses", "topic_arns": [esp.TOPIC]})
    assert duplicate.status_code == 409
    wrong_field = await api.http.patch(f"/esp-webhooks/{postmark['id']}", json={"signing_key": "k" * 20})
    assert wrong_field.status_code == 422
