"""The whole pipeline under load: LEADS leads over 20 domains at interval 0, through the api (CSV import,
campaign, start), one scheduler and two senders, each in its own process as in production, to an aiosmtpd
sink in a process of its own. Beside it, the building block: bare aiosmtplib sessions delivering the same
number of e-mails to the same sink.

Figures come from the database, not from the services' counters: e-mails/s from the start call to the last
accepted e-mail; slot → SMTP accept per message (`sent_at − scheduled_at`; at interval 0 every slot is
the start, so this is how long the backlog took to drain); peak RSS of every service process.
Run as `python -m bench.pipeline LEADS`; prints JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import bench_database, percentile, raw_connection
from bench.sending import bare, peak_rss_mb, smtp_sink
from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN, ApiClient
from tests.support.smtp import free_port
from tests.support.stack import subprocess_service, with_ports

DOMAINS = 20
SENDERS = 2


async def run_campaign(api: ApiClient, leads: int, port: int) -> tuple[str, float]:
    """Domains, leads (one CSV import), template and a campaign started now; its id and the start time."""
    domains = [f"d{i}.load.example" for i in range(DOMAINS)]
    for name in domains:
        await api.domain(name, port, interval=0)
    csv = "email,first_name,tags\n" + "".join(
        f"lead{i}@lead{i % 97}.example,Lead{i},load\n" for i in range(leads)
    )
    imported = await api.http.post("/leads/import", files={"file": ("leads.csv", csv.encode(), "text/csv")})
    assert imported.json()["data"]["created"] == leads, imported.text
    template = await api.template()
    started = time.time()
    campaign = await api.create(
        "/campaigns",
        {
            "name": "load",
            "template_id": template["id"],
            "audience": {"mode": "tags", "tags": ["load"]},
            "schedule": {"start_mode": "now", "window": ALWAYS_OPEN},
            "domains": domains,
        },
    )
    return campaign["id"], started


async def ours(settings: Settings, leads: int, port: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as logs:
        async with contextlib.AsyncExitStack() as stack:
            services = {
                name: await stack.enter_async_context(
                    subprocess_service(name, with_ports(settings, name), Path(logs))
                )
                for name in ("api", "scheduler")
            }
            for number in range(SENDERS):
                services[f"sender {number + 1}"] = await stack.enter_async_context(
                    subprocess_service("sender", with_ports(settings, "sender"), Path(logs))
                )
            async with ApiClient(services["api"].url) as api:
                await api.login()
                campaign_id, started = await run_campaign(api, leads, port)
            async with raw_connection(settings) as db:
                while (  # noqa: ASYNC110 (no event tells "completed" to an outsider)
                    await db.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign_id)
                    != "completed"
                ):
                    await asyncio.sleep(0.25)
                rows = await db.fetch(
                    "SELECT extract(epoch FROM sent_at) AS sent,"
                    " extract(epoch FROM sent_at - scheduled_at) AS lag"
                    " FROM messages WHERE campaign_id = $1 AND status = 'sent'",
                    campaign_id,
                )
            peaks = {name: peak_rss_mb(service.process.pid) for name, service in services.items()}
    assert len(rows) == leads, f"{len(rows)} of {leads} sent: see the service logs"
    lags = [float(row["lag"]) for row in rows]
    return {
        "rate": leads / (max(float(row["sent"]) for row in rows) - started),
        "p50_slot_to_accept_s": percentile(lags, 0.5),
        "p99_slot_to_accept_s": percentile(lags, 0.99),
        **{f"peak_rss_mb {name}": mb for name, mb in peaks.items()},
    }


async def measure(settings: Settings, leads: int) -> dict[str, float]:
    port = free_port()
    with smtp_sink(port):
        figures = await ours(settings, leads, port)
        raw_rate = await bare(leads, port, SENDERS * settings.sender_concurrency)
    return {"leads": leads, **figures, "raw_rate": raw_rate}


def main() -> None:
    leads = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with bench_database(Settings()) as settings:
        print(json.dumps(asyncio.run(measure(settings, leads))))


if __name__ == "__main__":
    main()
