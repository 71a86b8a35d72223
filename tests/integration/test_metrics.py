"""What each service's /metrics says about a campaign run through the real processes, RabbitMQ, PostgreSQL
and SMTP. Each test has a database and broker names of its own: the backlog and queue gauges count exactly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.db.migrate import drop_database, upgrade
from shared.messaging import remove_topology
from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN, ApiClient
from tests.support.smtp import SmtpSink, running_sink
from tests.support.stack import ServiceProcess, subprocess_service, with_ports

pytestmark = pytest.mark.integration

Stack = Callable[..., Awaitable[dict[str, ServiceProcess]]]


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a /metrics answer, None when it is not there."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


async def scrape(service: ServiceProcess) -> str:
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"{service.url}/metrics")
        assert reply.status_code == 200
        return reply.text


async def eventually(service: ServiceProcess, name: str, expected: float, **labels: str) -> str:
    """The service's metrics once the series shows `expected` (asserted after 30 s)."""
    deadline = asyncio.get_running_loop().time() + 30
    while (sample(text := await scrape(service), name, **labels)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            assert sample(text, name, **labels) == expected, (name, labels)
        await asyncio.sleep(0.2)
    return text


@pytest.fixture
async def stack(settings: Settings, tmp_path: Path) -> AsyncIterator[Stack]:
    """Starts the named services as processes, on a database and broker names of this test's own."""
    run = uuid.uuid4().hex[:10]
    own = with_ports(
        settings.model_copy(
            update={
                "database_url": settings.database_url.rsplit("/", 1)[0] + f"/maildash_metrics_{run}",
                "broker_prefix": f"metrics-{run}",
            }
        ),
        "api",
        "scheduler",
        "sender",
        "tracker",
    )
    await asyncio.to_thread(upgrade, own.database_url)
    try:
        async with AsyncExitStack() as services:

            async def start(*names: str) -> dict[str, ServiceProcess]:
                return {
                    name: await services.enter_async_context(subprocess_service(name, own, tmp_path))
                    for name in names
                }

            yield start
    finally:
        await remove_topology(own.amqp_url, own.broker_prefix)
        await drop_database(own.database_url)


async def test_a_campaign_shows_per_route_per_domain_and_per_slot(stack: Stack, smtp_sink: SmtpSink) -> None:
    services = await stack("api", "scheduler", "sender", "tracker")
    async with ApiClient(services["api"].url) as api, running_sink() as refusing:
        await api.login()
        refusing.answer_from(1, "550 5.1.1 No such user", "rcpt")
        await api.domain("fine.example", smtp_sink.port)
        await api.domain("gone.example", refusing.port)
        leads = [await api.lead(f"lead{n}@client{n}.example") for n in range(2)]
        template = await api.template()
        # Round robin: the first lead goes out from fine.example, the second from gone.example.
        campaign = await api.campaign(
            template["id"], [lead["id"] for lead in leads], ["fine.example", "gone.example"]
        )
        for _ in range(50):
            if (await api.get(f"/campaigns/{campaign['id']}"))["status"] == "completed":
                break
            await asyncio.sleep(0.2)
        refused = await api.http.get(f"/campaigns/{campaign['id']}", headers={"Authorization": ""})
        assert refused.status_code == 401
    async with httpx.AsyncClient(base_url=services["tracker"].url) as browser:
        assert (await browser.get("/track/open.gif?m=forged&t=forged")).status_code == 200
        assert (await browser.get("/u/not-a-token")).status_code == 404

    sender = await scrape(services["sender"])
    outcomes = "maildash_sender_outcomes_total"
    assert sample(sender, outcomes, domain="fine.example", outcome="sent") == 1
    assert sample(sender, outcomes, domain="gone.example", outcome="bounced") == 1
    assert sample(sender, outcomes, domain="fine.example", outcome="bounced") is None
    assert sample(sender, "maildash_sender_slot_lateness_seconds_count") == 2
    lateness = sample(sender, "maildash_sender_slot_lateness_seconds_sum")
    assert lateness is not None
    assert 0 <= lateness < 20  # both slots were "now", sent at once

    api_metrics = await scrape(services["api"])
    route = "/api/v1/campaigns/{campaign_id}"
    assert (
        sample(api_metrics, "maildash_http_requests_total", method="GET", route=route, status="200") or 0
    ) >= 1
    assert sample(api_metrics, "maildash_http_requests_total", method="GET", route=route, status="401") == 1
    assert sample(api_metrics, "maildash_http_request_duration_seconds_count", method="GET", route=route)
    assert campaign["id"] not in api_metrics  # no ids in labels

    tracker = await scrape(services["tracker"])
    assert sample(tracker, "maildash_tracker_pixel_hits_total") == 1
    assert (
        sample(tracker, "maildash_http_requests_total", method="GET", route="/u/{token}", status="404") == 1
    )
    assert "not-a-token" not in tracker

    scheduler = await scrape(services["scheduler"])
    assert sample(scheduler, "maildash_scheduler_planned_messages") == 0
    assert sample(scheduler, "maildash_scheduler_due_unsent_messages") == 0
    assert sample(scheduler, "maildash_queue_messages", queue="sender.message.send") == 0
    assert sample(scheduler, "maildash_queue_messages", queue="dead-letters") == 0


async def test_the_backlog_and_the_queue_hold_what_no_sender_took(stack: Stack, smtp_sink: SmtpSink) -> None:
    services = await stack("api", "scheduler")  # no sender: the due message waits in its queue
    async with ApiClient(services["api"].url) as api:
        await api.login()
        await api.domain("wait.example", smtp_sink.port)
        now, later = [await api.lead(f"{name}@client.example") for name in ("now", "later")]
        template = await api.template()
        await api.campaign(template["id"], [now["id"]], ["wait.example"])
        tomorrow = {"start_mode": "at", "start_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
        await api.campaign(
            template["id"], [later["id"]], ["wait.example"], schedule={**tomorrow, "window": ALWAYS_OPEN}
        )

    await eventually(services["scheduler"], "maildash_scheduler_planned_messages", 1)  # tomorrow's
    scheduler = await eventually(
        services["scheduler"], "maildash_queue_messages", 1, queue="sender.message.send"
    )
    assert sample(scheduler, "maildash_scheduler_due_unsent_messages") == 1
    assert sample(scheduler, "maildash_scheduler_planned_messages") == 1
    assert sample(scheduler, "maildash_metrics_refresh_failures_total") == 0
    assert smtp_sink.received == []
