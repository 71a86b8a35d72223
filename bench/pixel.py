"""Open-pixel throughput: wrk against one tracker process recording valid hits for 20,000 sent messages,
beside a bare Starlette endpoint answering the same GIF under the same uvicorn settings, in the same run.
Then: how long until every accepted hit is visible in the KPI store.

Run as `python -m bench.pixel [SECONDS]`; prints JSON. Needs wrk (`make bench-packages`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.common import ALWAYS_OPEN, bench_database, raw_connection, seed_campaign
from services.tracker.routes import PIXEL, PIXEL_HEADERS
from shared import tokens
from shared.settings import Settings
from tests.support.smtp import free_port
from tests.support.stack import subprocess_service, wait_ready, with_ports

MESSAGES = 20_000
CONNECTIONS = 64
LUA = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i], {["User-Agent"] = "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15"})
end
"""


async def bare_pixel(_: Request) -> Response:
    return Response(PIXEL, media_type="image/gif", headers=PIXEL_HEADERS)


def bare_app() -> Starlette:
    return Starlette(routes=[Route("/track/open.gif", bare_pixel), Route("/readyz", bare_pixel)])


@contextlib.asynccontextmanager
async def bare_server(port: int) -> AsyncIterator[str]:
    """The building block: the same GIF from a bare Starlette endpoint, uvicorn as the services run it."""
    process = subprocess.Popen([sys.executable, "-m", "bench.pixel", "--bare", str(port)])  # noqa: S603, ASYNC220
    try:
        await wait_ready(f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def wrk(url: str, paths: Path, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % paths)
    done = subprocess.run(  # noqa: S603
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", script.name, url],  # noqa: S607
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99 is not None, out
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p99_s": float(p99.group(1)) * scale,
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


async def seed(settings: Settings) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A campaign whose 20,000 messages were sent an hour ago (so their opens count as human ones)."""
    _, campaign = await seed_campaign(settings, MESSAGES, 20, 0, ALWAYS_OPEN)
    async with raw_connection(settings) as db:
        rows = await db.fetch(
            "INSERT INTO messages (id, workspace_id, campaign_id, lead_id, sending_domain_id, domain_used,"
            " scheduled_at, slot_ends_at, not_before, status, sent_at, step, retry_count)"
            " SELECT gen_random_uuid(), c.workspace_id, c.id, cl.lead_id, d.id, d.domain, t, t, t, 'sent', t,"
            " 0, 0 FROM campaigns c JOIN campaign_leads cl ON cl.campaign_id = c.id,"
            " LATERAL (SELECT id, domain FROM sending_domains WHERE workspace_id = c.workspace_id LIMIT 1) d,"
            " LATERAL (SELECT now() - interval '1 hour') s(t) WHERE c.id = $1 RETURNING id",
            campaign,
        )  # fmt: skip
        await db.execute("UPDATE campaigns SET status = 'running' WHERE id = $1", campaign)
        await db.execute("ANALYZE")
    return campaign, [row["id"] for row in rows]


async def opens_total(settings: Settings, campaign: uuid.UUID) -> int:
    async with raw_connection(settings) as db:
        return int(
            await db.fetchval(
                "SELECT coalesce(sum(opens_total), 0) FROM campaign_kpis WHERE campaign_id = $1", campaign
            )
        )


async def measure(settings: Settings, seconds: int) -> dict[str, float]:
    campaign, messages = await seed(settings)
    with tempfile.TemporaryDirectory() as scratch:
        paths = Path(scratch) / "paths.txt"
        paths.write_text(
            "".join(
                f"/track/open.gif?m={m}&t={tokens.sign_message(settings.tracking_secret, 'open', str(m))}\n"
                for m in messages
            )
        )
        async with bare_server(free_port()) as bare:
            raw = await asyncio.to_thread(wrk, f"{bare}/track/open.gif", paths, seconds)
        async with subprocess_service("tracker", with_ports(settings, "tracker"), Path(scratch)) as tracker:
            ours = await asyncio.to_thread(wrk, f"{tracker.url}/track/open.gif", paths, seconds)
            accepted = ours["requests"] - ours["non_2xx"]
            started = time.perf_counter()
            while await opens_total(settings, campaign) < accepted and time.perf_counter() - started < 30:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            visible_after = time.perf_counter() - started
            recorded = await opens_total(settings, campaign)
    return {
        "rate": ours["rate"],
        "p99_s": ours["p99_s"],
        "raw_rate": raw["rate"],
        "raw_p99_s": raw["p99_s"],
        "accepted": accepted,
        "recorded": recorded,
        "visible_after_s": visible_after,
    }


def main() -> None:
    if sys.argv[1:2] == ["--bare"]:
        uvicorn.run(
            bare_app(), host="127.0.0.1", port=int(sys.argv[2]), access_log=False, log_level="warning"
        )
        return
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with bench_database(Settings()) as settings:
        print(json.dumps(asyncio.run(measure(settings, seconds))))


if __name__ == "__main__":
    main()
