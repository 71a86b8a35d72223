"""The containers' healthcheck (`python -m tools.healthcheck`), run as Compose runs it, against the api."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from tests.support.smtp import free_port
from tests.support.stack import ROOT

pytestmark = pytest.mark.integration


async def healthcheck(*args: str, **env: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.healthcheck", *args, cwd=ROOT, env={**os.environ, **env}
    )
    return await asyncio.wait_for(process.wait(), timeout=60)


async def test_healthy_while_the_service_is_ready_and_unhealthy_without_it(api_url: str) -> None:
    port = api_url.rsplit(":", 1)[1]
    nothing = str(free_port())
    assert await healthcheck("api", MAILDASH_API_PORT=port) == 0
    assert await healthcheck("api", MAILDASH_API_PORT=nothing) == 1
    assert await healthcheck("--tcp", port) == 0
    assert await healthcheck("--tcp", nothing) == 1
