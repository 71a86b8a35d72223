"""Outgoing webhooks end to end: events written by the services reach real local HTTP receivers, signed
(Standard Webhooks), at least once and in order per endpoint; a receiver that fails, hangs or is slow holds
up nobody else; one that keeps failing is disabled and says why; any delivery can be sent again.

Each test works in a workspace of its own and looks only at the events about the campaigns it made, so the
events of other tests (or a scheduler's) never count."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.webhooks.main import create_app as create_webhooks
from shared import webhooks
from shared.settings import Settings
from tests.support.api import ApiClient, new_workspace
from tests.support.pipeline import Pipeline, until
from tests.support.receivers import Receiver, receiving
from tests.support.samples import pixel_of
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service, subprocess_service, with_ports

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
QUICK = {"webhook_retry_first_seconds": 0.2, "webhook_retry_max_seconds": 0.5, "webhook_timeout_seconds": 2.0}


@contextlib.asynccontextmanager
async def worker(settings: Settings, **overrides: Any) -> AsyncIterator[str]:
    """`python -m services.webhooks`, in this process, with these settings changed."""
    tuned = settings.model_copy(update={**QUICK, **overrides})
    async with inprocess_service(create_webhooks, tuned, free_port()) as url:
        yield url


@pytest.fixture
async def tenant(api_url: str) -> AsyncIterator[ApiClient]:
    async with await new_workspace(api_url, f"hooks-{uuid.uuid4().hex[:8]}") as api:
        yield api


async def endpoint(api: ApiClient, receiver: Receiver, *event_types: str) -> dict[str, Any]:
    body = {"url": receiver.url, "event_types": list(event_types), "secret": SECRET}
    return await api.create("/webhook-endpoints", body)


class Campaigns:
    """Campaigns made through the api, with what they need; no scheduler runs, so nothing else happens to
    them than what the test does."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.ids: list[str] = []
        self._needs: tuple[str, str, str] | None = None

    async def start(self) -> str:
        if self._needs is None:
            domain = f"hooks-{uuid.uuid4().hex[:8]}.example"
            await self.api.domain(domain, 1025)
            lead = await self.api.lead(f"{uuid.uuid4().hex[:8]}@lead.example")
            self._needs = (domain, lead["id"], (await self.api.template())["id"])
        domain, lead_id, template_id = self._needs
        campaign = await self.api.campaign(template_id, [lead_id], [domain])
        self.ids.append(campaign["id"])
        return str(campaign["id"])

    async def pause(self, campaign_id: str) -> None:
        reply = await self.api.http.post(f"/campaigns/{campaign_id}/pause")
        assert reply.status_code == 200, reply.text


def verified(receiver: Receiver) -> None:
    """Every request carries the Standard Webhooks headers, its signature checks out with the secret, and
    its `webhook-id` is the event's id."""
    for request in receiver.requests:
        headers = request.headers
        timestamp = int(headers["webhook-timestamp"])
        expected = webhooks.signature(SECRET, headers["webhook-id"], timestamp, request.body)
        assert headers["webhook-signature"] == expected
        assert headers["webhook-id"] == request.event["data"]["event_id"]


async def test_events_reach_an_endpoint_signed_in_order_and_are_listed(
    settings: Settings, tenant: ApiClient, tmp_path: Path
) -> None:
    tuned = with_ports(settings.model_copy(update=QUICK), "webhooks")
    async with receiving("ok") as [receiver], subprocess_service("webhooks", tuned, tmp_path) as process:
        hook = await endpoint(tenant, receiver, "campaign.started", "campaign.paused")
        assert "secret" not in hook
        assert (hook["enabled"], hook["disabled_reason"]) == (True, None)
        campaigns = Campaigns(tenant)
        expected = []
        for _ in range(3):
            campaign_id = await campaigns.start()
            await campaigns.pause(campaign_id)
            expected += [("campaign.started", campaign_id), ("campaign.paused", campaign_id)]

        async def all_there() -> bool:
            return len(receiver.accepted(set(campaigns.ids))) >= len(expected)

        await until(all_there, 30)
        assert receiver.accepted(set(campaigns.ids)) == expected, (receiver.accepted(), expected)
        verified(receiver)

        deliveries = await tenant.get(f"/webhook-endpoints/{hook['id']}/deliveries?page_size=200")
        assert deliveries["total"] == len(expected)
        assert {d["status"] for d in deliveries["items"]} == {"delivered"}
        attempts = await tenant.get(f"/webhook-endpoints/{hook['id']}/attempts?page_size=200")
        answers = [(a["status_code"], a["succeeded"]) for a in attempts["items"]]
        assert answers == [(204, True)] * len(expected)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"{process.url}/metrics")).text
        assert f"maildash_webhook_delivery_lag_seconds_count {len(expected)}.0" in metrics


async def test_a_failing_hanging_or_slow_receiver_holds_up_nobody_else(
    settings: Settings, tenant: ApiClient
) -> None:
    async with (
        receiving("ok", "flaky", "hanging", "slow") as receivers,
        worker(settings, webhook_timeout_seconds=5.0),
    ):
        ok, flaky, hanging, slow = receivers
        hooks = [await endpoint(tenant, receiver, "campaign.started") for receiver in receivers]
        campaigns = Campaigns(tenant)
        for _ in range(10):
            await campaigns.start()
        expected = [("campaign.started", campaign_id) for campaign_id in campaigns.ids]

        async def delivered_to(receiver: Receiver) -> bool:
            return len(receiver.accepted(set(campaigns.ids))) >= len(expected)

        # The hanging receiver holds its first delivery for the whole 5 s timeout, again and again.
        for receiver in (ok, flaky, slow):
            await until(lambda r=receiver: delivered_to(r), 60)  # type: ignore[misc]
            assert receiver.accepted(set(campaigns.ids)) == expected  # each once, in order
        assert hanging.accepted() == []
        assert len({r.headers["webhook-id"] for r in hanging.requests}) == 1  # its first, never the next
        flaky_attempts = await tenant.get(f"/webhook-endpoints/{hooks[1]['id']}/attempts?page_size=200")
        assert sorted(a["status_code"] for a in flaky_attempts["items"]) == [204] * 10 + [500] * 10
        for receiver in receivers:
            verified(receiver)


async def test_an_endpoint_that_keeps_failing_is_disabled_says_why_and_can_send_again(
    settings: Settings, tenant: ApiClient
) -> None:
    async with (
        receiving("failing", "ok") as [failing, ok],
        worker(settings, webhook_give_up_seconds=2.0),
    ):
        hook = await endpoint(tenant, failing, "campaign.started")
        campaigns = Campaigns(tenant)
        first = await campaigns.start()

        async def disabled() -> bool:
            return not (await tenant.get(f"/webhook-endpoints/{hook['id']}"))["enabled"]

        await until(disabled, 30)
        shown = await tenant.get(f"/webhook-endpoints/{hook['id']}")
        assert shown["disabled_reason"].startswith("disabled after failing for ")
        assert shown["disabled_reason"].endswith("the last attempt got HTTP 500")
        [delivery] = (await tenant.get(f"/webhook-endpoints/{hook['id']}/deliveries"))["items"]
        assert (delivery["status"], delivery["last_error"], delivery["next_attempt_at"]) == (
            "failed",
            "HTTP 500",
            None,
        )
        attempts = (await tenant.get(f"/webhook-endpoints/{hook['id']}/attempts?page_size=200"))["items"]
        assert len(attempts) == delivery["attempts"] >= 3
        assert {(a["status_code"], a["error"]) for a in attempts} == {(500, "HTTP 500")}

        # Disabled, it is sent nothing more, and hears no new event.
        second = await campaigns.start()
        assert (await tenant.get(f"/webhook-endpoints/{hook['id']}/deliveries"))["total"] == 1

        # Sent again and enabled, at a receiver that answers: delivered, with the same webhook-id.
        redelivered = await tenant.http.post(
            f"/webhook-endpoints/{hook['id']}/deliveries/{delivery['id']}/redeliver"
        )
        assert redelivered.status_code == 202, redelivered.text
        assert redelivered.json()["data"]["status"] == "pending"
        patched = await tenant.http.patch(
            f"/webhook-endpoints/{hook['id']}", json={"url": ok.url, "enabled": True}
        )
        assert patched.json()["data"]["disabled_reason"] is None

        async def resent() -> bool:
            return len(ok.accepted()) == 1

        await until(resent, 30)
        assert ok.accepted() == [("campaign.started", first)]
        assert ok.requests[0].headers["webhook-id"] == failing.requests[0].headers["webhook-id"]
        assert second not in {c for _, c in ok.accepted()}


async def test_message_events_and_the_campaigns_completion_are_delivered(
    settings: Settings, pipeline: Pipeline
) -> None:
    types = ("message.sent", "message.opened", "message.clicked", "campaign.completed")
    api = pipeline.api
    async with receiving("ok") as [receiver], worker(settings):
        await endpoint(api, receiver, *types)
        domain = f"hooks-{uuid.uuid4().hex[:8]}.example"
        await api.domain(domain, pipeline.sink.port)
        lead = await api.lead(f"{uuid.uuid4().hex[:8]}@lead.example")
        template = await api.template(
            body_html='<p>See <a href="https://example.com/offer">the offer</a></p>'
        )
        campaign = await api.campaign(
            template["id"], [lead["id"]], [domain],
            followup={"enabled": False}, tracking={"opens": True, "clicks": True},
        )  # fmt: skip

        async def mailed() -> bool:
            return any(m.rcpt_tos == [lead["email"]] for m in pipeline.sink.received)

        await until(mailed, 30)
        [mail] = [m for m in pipeline.sink.received if m.rcpt_tos == [lead["email"]]]
        async with httpx.AsyncClient() as client:
            opened = await client.get(
                f"{pipeline.tracker_url}{pixel_of(mail)}", headers={"User-Agent": "Mozilla/5.0"}
            )
            assert opened.status_code == 200
            clicked = await client.get(f"{pipeline.tracker_url}{click_of(mail)}")
            assert clicked.status_code == 302

        async def all_four() -> bool:
            return {kind for kind, _ in receiver.accepted({campaign["id"]})} == set(types)

        await until(all_four, 30)
        about = [r.event for r in receiver.requests if r.event["data"]["campaign_id"] == campaign["id"]]
        # In the order they happened: the open waits for its commit, so does the click.
        in_order = [e["type"] for e in about if e["type"] != "campaign.completed"]
        assert in_order == ["message.sent", "message.opened", "message.clicked"]
        by_type = {event["type"]: event["data"] for event in about}
        models = {model.routing_key: model for model in webhooks.WEBHOOK_EVENTS}
        for kind, data in by_type.items():  # each is its event, as shared/events.py defines it
            assert models[kind].model_validate(data).model_dump(mode="json").keys() == data.keys(), kind
        [message] = await pipeline.messages(campaign["id"])
        for kind in ("message.sent", "message.opened", "message.clicked"):
            assert by_type[kind]["message_id"] == message["id"], kind
        assert by_type["message.clicked"]["url"] == "https://example.com/offer"
        verified(receiver)


def click_of(mail: Any) -> str:
    """The path and query of the first tracked link in a received e-mail."""
    html = mail.message.get_body(("html",)).get_content()
    start = html.index("/track/click?")
    return html[start : html.index('"', start)].replace("&amp;", "&")
