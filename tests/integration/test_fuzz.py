"""No input a client sends gets a 500, and every answer matches the OpenAPI document (schemathesis); meanwhile
`/healthz` keeps answering, and nothing the fuzz made the services announce ends in the dead letters."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import pytest

from shared.settings import Settings
from tests.support.api import ApiClient, new_workspace
from tests.support.broker import all_consumed, take_dead_letters
from tests.support.latency import sampling
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration


async def test_text_that_postgresql_cannot_store_is_refused_not_crashed(api: ApiClient) -> None:
    for name in ("nul\u0000byte", "lone \ud800 surrogate"):
        body = json.dumps({"name": name, "subject": "s", "body_html": "b"})  # escapes both, as a client may
        reply = await api.http.post("/templates", content=body, headers={"Content-Type": "application/json"})
        assert reply.status_code == 422, reply.text
    login = await api.http.post("/auth/token", data={"username": "a\u0000@example.com", "password": "x"})
    assert login.status_code == 422
    assert (await api.http.get("/campaigns/messages?domain=a%00b")).status_code == 422


@pytest.mark.timeout(400)  # every operation, 25 examples each: over two minutes on a busy machine
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    api_url: str, pipeline: Pipeline, settings: Settings, figures: dict[str, str]
) -> None:
    """The scheduler, sender and tracker consume whatever the fuzz starts (campaigns, lifecycle calls,
    resends): an event or command that one of them kept failing on would be in the dead letters. The fuzz
    runs in a workspace of its own: the settings it sets (health thresholds of 1, say) are no other test's."""
    examples = os.environ.get("MAILDASH_FUZZ_EXAMPLES", "25")
    async with await new_workspace(api_url, f"fuzz-{uuid.uuid4().hex[:8]}") as fuzzer:
        authorization = fuzzer.http.headers["Authorization"]
    st = os.path.join(os.path.dirname(sys.executable), "st")
    async with sampling(f"{api_url}/healthz", pause=0.02) as health:
        process = await asyncio.create_subprocess_exec(
            st, "run", f"{api_url}/openapi.json",
            "-H", f"Authorization: {authorization}",
            "--checks", "not_a_server_error,status_code_conformance,response_schema_conformance",
            "--max-examples", examples, "--seed", "1", "--no-color",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()[-4000:]

    figures["api /healthz during the fuzz"] = health.summary()
    assert set(health.statuses) == {200}
    assert health.quantile(0.99) < 0.100, health.summary()

    await pipeline.until(lambda: all_consumed(settings), seconds=60)
    await asyncio.sleep(1)  # a message being redelivered is briefly in none of the queues
    assert not await take_dead_letters(settings)
