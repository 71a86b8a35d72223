"""`/healthz` of the api and of a sender while one tenant renders its worst allowed template in a loop,
beside the same `/healthz` measured idle in the same run (the building block: the service doing nothing).

The worst allowed template is as long as a template may be, takes most of the memory a render worker may
have, and then loops until the render deadline stops it: every job costs a worker the whole deadline of CPU
and ends in a kill and a fresh worker. (Compiling a dense template costs CPU too, but no more than the same
deadline.) The tenant keeps every api render worker busy previewing it, and has a
campaign of it queued at the sender, whose every message renders it.

Run as `python -m bench.templates [SECONDS]`; prints JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ALWAYS_OPEN, bench_database, percentile, raw_connection, seed_campaign
from bench.sending import queue_commands
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.stack import subprocess_service, with_ports

SPIN = (
    "{% for a in range(100000) %}{% for b in range(100000) %}{% if a == b %}{% endif %}{% endfor %}"
    "{% endfor %}"
)
HEADROOM_MB = 96  # of the worker's address space: the interpreter, Jinja2 and the compiled template


def worst_template(settings: Settings) -> str:
    ballast = (settings.template_memory_mb - HEADROOM_MB) * 1024 * 1024
    source = f"{{% set ballast = '%*s' % ({ballast}, first_name) %}}{SPIN}"  # at render time, not folded
    padding = "<p>A line of a cold e-mail of ordinary length.</p>\n"
    room = settings.template_source_max_chars - len(source)
    return source + padding * (room // len(padding))


async def healthz_p99(url: str, seconds: float) -> float:
    """p99 of `/healthz`, one request every 10 ms for `seconds`."""
    took = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            reply = await client.get("/healthz")
            took.append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.text
            await asyncio.sleep(0.01)
    return percentile(took, 0.99)


async def preview_in_a_loop(api: ApiClient, template_id: str, lead_id: str, refused: list[str]) -> None:
    while True:
        reply = await api.http.post(f"/templates/{template_id}/preview", json={"lead_id": lead_id})
        assert reply.status_code == 422, reply.text[:300]
        refused.append(reply.json()["error"])


async def failed_messages(settings: Settings, campaign_id: object) -> int:
    async with raw_connection(settings) as db:
        failed: int = await db.fetchval(
            "SELECT count(*) FROM messages WHERE campaign_id = $1 AND status = 'failed'", campaign_id
        )
    return failed


async def measure(settings: Settings, seconds: float) -> dict[str, Any]:
    template = worst_template(settings)
    # The sender fails one message per deadline per worker: enough queued to outlast the measurement.
    messages = int(seconds / settings.template_render_seconds * settings.template_workers * 3) + 10
    workspace, campaign_id = await seed_campaign(settings, messages, 1, 0, ALWAYS_OPEN)
    async with raw_connection(settings) as db:
        await db.execute("UPDATE templates SET body_html = $1 WHERE workspace_id = $2", template, workspace)
    services = with_ports(settings, "api", "sender")
    with tempfile.TemporaryDirectory() as logs:
        async with contextlib.AsyncExitStack() as stack:
            api_service = await stack.enter_async_context(subprocess_service("api", services, Path(logs)))
            sender = await stack.enter_async_context(subprocess_service("sender", services, Path(logs)))
            api = await stack.enter_async_context(ApiClient(api_service.url))
            await api.login(settings.admin_email, settings.admin_password)
            lead = await api.lead("jan@client.example", first_name="Jan", company="Client BV")
            hostile = await api.template(body_html=template)

            idle = await asyncio.gather(
                healthz_p99(api_service.url, seconds), healthz_p99(sender.url, seconds)
            )
            refused: list[str] = []
            tenant = [
                asyncio.create_task(preview_in_a_loop(api, hostile["id"], lead["id"], refused))
                for _ in range(settings.template_workers)
            ]
            await queue_commands(settings, campaign_id)
            busy = await asyncio.gather(
                healthz_p99(api_service.url, seconds), healthz_p99(sender.url, seconds)
            )
            for task in tenant:
                task.cancel()
            await asyncio.gather(*tenant, return_exceptions=True)
            failed = await failed_messages(settings, campaign_id)
    assert refused, "the tenant rendered nothing"
    assert all("took longer than" in reason for reason in refused), refused[:3]
    assert failed > 0, "the sender rendered nothing"
    return {
        "api_idle_p99_s": idle[0],
        "sender_idle_p99_s": idle[1],
        "api_p99_s": busy[0],
        "sender_p99_s": busy[1],
        "previews_refused": len(refused),
        "messages_failed": failed,
        "template_chars": len(template),
    }


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    with bench_database(Settings()) as settings:
        print(json.dumps(asyncio.run(measure(settings, seconds))))


if __name__ == "__main__":
    main()
