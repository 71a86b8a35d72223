"""Templates are tenant code, and one message's data can be poison: neither may stall a service, change lead
data, or leave a message stuck. The api and sender run as processes, as in production, so that each one's
`/healthz` is timed on its own event loop while a hostile template runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.scheduler.main import create_app as create_scheduler
from shared import crypto
from shared.db import asyncpg_dsn
from shared.messaging import remove_topology
from shared.render import TemplateLimits
from shared.render_pool import RenderPool
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.broker import take_dead_letters
from tests.support.latency import Samples, sampling
from tests.support.smtp import SmtpSink, free_port, running_sink
from tests.support.stack import ServiceProcess, inprocess_service, subprocess_service, with_ports

pytestmark = pytest.mark.integration

DEADLINE = 1.0  # seconds a template may take here (the default is 2)
# Runs until it is stopped: 10^15 iterations, no output.
ENDLESS = (
    "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
    "{% if a == c %}{% endif %}{% endfor %}{% endfor %}{% endfor %}"
)
HEALTHY = 0.1  # seconds /healthz may take while a template runs


@dataclass
class Stack:
    api: ApiClient
    api_service: ServiceProcess
    sender: ServiceProcess
    sink: SmtpSink
    settings: Settings


@pytest.fixture(scope="module")
def hostile_settings(settings: Settings) -> Iterator[Settings]:
    """Its own broker names, so that its dead-letter queue counts only what this module's services did."""
    own = settings.model_copy(
        update={"broker_prefix": f"{settings.broker_prefix}-hostile", "template_render_seconds": DEADLINE}
    )
    yield own
    asyncio.run(remove_topology(own.amqp_url, own.broker_prefix))


@pytest.fixture(scope="module")
async def stack(hostile_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    logs = tmp_path_factory.mktemp("hostile")
    services = with_ports(hostile_settings, "api", "sender")
    async with AsyncExitStack() as enter:
        sink = await enter.enter_async_context(running_sink())
        api_service = await enter.enter_async_context(subprocess_service("api", services, logs))
        sender = await enter.enter_async_context(subprocess_service("sender", services, logs))
        await enter.enter_async_context(inprocess_service(create_scheduler, services, free_port()))
        api = await enter.enter_async_context(ApiClient(api_service.url))
        await api.login()
        yield Stack(api, api_service, sender, sink, services)


@contextlib.asynccontextmanager
async def healthz_sampled(url: str) -> AsyncIterator[Samples]:
    """`/healthz` of the service at `url`, sampled from a process of its own while the block runs."""
    async with sampling(f"{url}/healthz", pause=0.02) as health:
        yield health
    assert len(health.seconds) >= 10, health.summary()
    assert set(health.statuses) == {200}


def assert_live(health: Samples) -> None:
    """Answering all along: nearly every `/healthz` within HEALTHY, and none held for the render deadline, as
    a loop that rendered would hold every request (a busy 2-core machine delays the odd one a little)."""
    assert health.quantile(0.9) < HEALTHY, health.summary()
    assert max(health.seconds) < DEADLINE / 2, health.summary()


async def preview(api: ApiClient, template: dict[str, Any], lead: dict[str, Any]) -> httpx.Response:
    return await api.http.post(
        f"/templates/{template['id']}/preview", json={"lead_id": lead["id"]}, timeout=15
    )


async def a_lead(api: ApiClient, **extra: Any) -> dict[str, Any]:
    return await api.lead(f"{uuid.uuid4().hex[:10]}@lead.example", first_name="Jan", **extra)


async def test_a_preview_that_would_run_for_ever_answers_422_while_the_api_answers_everyone_else(
    stack: Stack,
) -> None:
    template = await stack.api.template(body_html=ENDLESS)  # compiles at once: only running it never ends
    lead = await a_lead(stack.api)

    async with healthz_sampled(stack.api_service.url) as health:
        refused = await preview(stack.api, template, lead)

    assert refused.status_code == 422, refused.text
    assert f"took longer than the {DEADLINE:g} s allowed" in refused.json()["error"]
    assert_live(health)
    honest = await stack.api.template(body_html="<p>Hi {{ first_name }}</p>")
    shown = await preview(stack.api, honest, lead)  # the overrunning worker was replaced
    assert shown.status_code == 200, shown.text
    assert "Hi Jan" in shown.json()["data"]["html"]


@pytest.mark.parametrize(
    "body_html",
    [
        "{{ 'a' * 3000000 }}",  # one repetition
        "{{ 'a' | center(3000000) }}",  # one filter call
        "{% for i in range(100000) %}0123456789{% endfor %}",  # many small pieces
        "{{ '%*s' % (300000000, 'a') }}",  # more memory than a render worker may take
    ],
)
async def test_a_preview_past_the_output_or_memory_limit_answers_422(stack: Stack, body_html: str) -> None:
    template = await stack.api.template(body_html=body_html)
    refused = await preview(stack.api, template, await a_lead(stack.api))
    assert refused.status_code == 422, refused.text[:300]
    assert refused.json()["fields"][0]["loc"] == ["body", "body_html"]


async def test_a_preview_of_text_no_response_can_carry_answers_422(stack: Stack) -> None:
    template = await stack.api.template(body_html="<p>{{ '%c' % 55296 }}</p>")  # a lone surrogate
    refused = await preview(stack.api, template, await a_lead(stack.api))
    assert refused.status_code == 422, refused.text
    assert "not valid Unicode" in refused.json()["error"]


async def test_a_template_cannot_change_lead_data(stack: Stack) -> None:
    template = await stack.api.template(
        subject="{{ fields.update({'city': 'Evil'}) }}Hello", body_html="<p>{{ fields.city }}</p>"
    )
    lead = await a_lead(stack.api, fields={"city": "Delft"})
    refused = await preview(stack.api, template, lead)
    assert refused.status_code == 422, refused.text
    assert "unsafe" in refused.json()["error"]


@pytest.mark.parametrize(
    ("field", "source", "reason"),
    [
        ("body_html", "<p>" + "x" * 100_000 + "</p>", "characters long, more than the 100000 allowed"),
        ("body_html", "{{ " + "(" * 1000 + "1" + ")" * 1000 + " }}", "nested too deeply"),
        ("body_text", "{% if 1 %}" * 500 + "{% endif %}" * 500, "nested too deeply"),
        ("followup_body_html", "<p>\n\n{{ first_name", "syntax error on line 3"),
    ],
)
async def test_a_template_over_a_limit_or_that_cannot_compile_is_refused_at_save(
    stack: Stack, field: str, source: str, reason: str
) -> None:
    body = {"name": "x", "subject": "s", "body_html": "b", field: source}
    created = await stack.api.http.post("/templates", json=body)
    assert created.status_code == 422, created.text[:300]
    assert reason in created.json()["error"]
    assert created.json()["fields"][0]["loc"] == ["body", field]

    kept = await stack.api.template()
    patched = await stack.api.http.patch(f"/templates/{kept['id']}", json={field: source})
    assert patched.status_code == 422, patched.text[:300]
    assert await stack.api.get(f"/templates/{kept['id']}") == kept  # nothing changed


async def campaign_over(stack: Stack, template: dict[str, Any], leads: int, **domain: Any) -> dict[str, Any]:
    name = f"hostile-{uuid.uuid4().hex[:8]}.example"
    await stack.api.domain(name, stack.sink.port, **domain)
    lead_ids = [(await a_lead(stack.api))["id"] for _ in range(leads)]
    return await stack.api.campaign(template["id"], lead_ids, [name])


async def until_completed(api: ApiClient, campaign_id: str, seconds: float = 30) -> list[dict[str, Any]]:
    """The campaign's messages once it has completed."""
    for _ in range(int(seconds * 10)):
        if (await api.get(f"/campaigns/{campaign_id}"))["status"] == "completed":
            return list((await api.get(f"/campaigns/messages?campaign_id={campaign_id}"))["items"])
        await asyncio.sleep(0.1)
    messages = (await api.get(f"/campaigns/messages?campaign_id={campaign_id}"))["items"]
    raise AssertionError(f"campaign not completed: {[(m['status'], m['last_error']) for m in messages]}")


async def test_a_template_that_overruns_at_send_time_fails_its_messages_at_once_and_the_sender_stays_live(
    stack: Stack,
) -> None:
    hostile = await campaign_over(stack, await stack.api.template(body_html=ENDLESS), leads=3)
    honest = await campaign_over(stack, await stack.api.template(), leads=1)

    async with healthz_sampled(stack.sender.url) as health:
        messages = await until_completed(stack.api, hostile["id"])

    assert [(m["status"], m["retry_count"]) for m in messages] == [("failed", 0)] * 3  # no retry
    assert all(f"took longer than the {DEADLINE:g} s allowed" in m["last_error"] for m in messages)
    assert_live(health)
    [delivered] = await until_completed(stack.api, honest["id"])
    assert delivered["status"] == "sent"


async def test_a_message_that_cannot_be_sent_fails_alone_and_nothing_dead_letters(stack: Stack) -> None:
    """A sending domain whose SMTP password was stored under an earlier encryption key: the sender cannot
    decrypt it. Its message fails with the reason; the other domain's message is sent; the campaign ends."""
    template = await stack.api.template()
    names = [f"poison-{uuid.uuid4().hex[:8]}.example" for _ in range(2)]
    for name in names:
        await stack.api.domain(name, stack.sink.port)
    connection = await asyncpg.connect(asyncpg_dsn(stack.settings.database_url))
    try:
        await connection.execute(
            "UPDATE sending_domains SET smtp_password_encrypted = $1 WHERE domain = $2",
            crypto.encrypt("an-encryption-key-since-rotated", "secret"),
            names[1],
        )
    finally:
        await connection.close()
    leads = [(await a_lead(stack.api))["id"] for _ in range(2)]
    campaign = await stack.api.campaign(template["id"], leads, names)

    messages = {m["domain_used"]: m for m in await until_completed(stack.api, campaign["id"])}

    assert messages[names[0]]["status"] == "sent"
    poisoned = messages[names[1]]
    assert (poisoned["status"], poisoned["retry_count"]) == ("failed", 0)
    assert "InvalidToken" in poisoned["last_error"]
    assert not await take_dead_letters(stack.settings)


def children(pid: int) -> set[int]:
    """The processes `pid` started, from any of its threads."""
    return {
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    }


def alive(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    return False


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
async def test_render_workers_end_with_their_service(
    hostile_settings: Settings, tmp_path: Path, stop: signal.Signals
) -> None:
    async with subprocess_service("sender", with_ports(hostile_settings, "sender"), tmp_path) as sender:
        workers = children(sender.process.pid)
        assert len(workers) == hostile_settings.template_workers
        await asyncio.to_thread(sender.terminate, stop)
    for _ in range(50):
        if not any(alive(pid) for pid in workers):
            break
        await asyncio.sleep(0.1)
    assert not any(alive(pid) for pid in workers)


def render_workers(pid: int) -> set[int]:
    return {
        child for child in children(pid) if b"render_worker" in Path(f"/proc/{child}/cmdline").read_bytes()
    }


async def test_a_render_worker_that_died_between_jobs_is_replaced_before_the_next_one() -> None:
    async with RenderPool(TemplateLimits(), workers=1, seconds=5.0, memory_mb=256) as pool:
        await pool.check({"subject": "Hello {{ first_name }}"})
        [worker] = render_workers(os.getpid())
        os.kill(worker, signal.SIGKILL)  # as the OOM killer would
        for _ in range(100):
            if not alive(worker):
                break
            await asyncio.sleep(0.01)
        await pool.check({"subject": "Hello {{ first_name }}"})  # not blamed on this template
