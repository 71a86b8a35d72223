"""Sender throughput: COUNT queued `SendMessage`s over 8 domains at interval 0, delivered by two sender
processes to an aiosmtpd sink in its own process. Beside it, the building block: bare aiosmtplib sessions
(as many as the senders' combined concurrency) delivering the same number of e-mails to the same sink.

The rate is the senders' own: from the first claim to the last recorded outcome, read from the database.
Run as `python -m bench.sending COUNT`; prints JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from bench.common import ALWAYS_OPEN, bench_database, raw_connection, seed_campaign
from services.scheduler.service import Scheduler
from shared.clock import utcnow
from shared.db import create_engine, session_factory
from shared.events import SendMessage
from shared.messaging import Topology, create_broker, publish
from shared.settings import Settings
from tests.support.smtp import free_port
from tests.support.stack import subprocess_service, with_ports

SENDERS = 2
DOMAINS = 8


@contextlib.contextmanager
def smtp_sink(port: int) -> object:
    sink = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "tools.smtp_sink", "--port", str(port), "--discard"],
        stdout=subprocess.PIPE,
    )
    try:
        assert sink.stdout is not None
        sink.stdout.readline()  # "smtp sink on …": listening
        yield sink
    finally:
        sink.terminate()
        sink.wait()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc")


async def queue_commands(settings: Settings, campaign_id: object) -> int:
    """Plan the campaign, mark every message dispatched and publish its command, as the dispatcher would."""
    engine = create_engine(settings.database_url, pool_size=2)
    await Scheduler(session_factory(engine), settings, utcnow).start_campaign(campaign_id)  # type: ignore[arg-type]
    await engine.dispose()
    async with raw_connection(settings) as db:
        rows = await db.fetch(
            "UPDATE messages SET status = 'dispatched' WHERE campaign_id = $1"
            " RETURNING id, workspace_id, scheduled_at",
            campaign_id,
        )
    topology = Topology(settings.broker_prefix)
    broker = create_broker(settings.amqp_url, prefetch=1)
    await broker.connect()
    try:
        await topology.declare(broker)
        for start in range(0, len(rows), 500):
            await asyncio.gather(
                *(
                    publish(
                        broker,
                        topology,
                        SendMessage.routing_key,
                        SendMessage(
                            workspace_id=row["workspace_id"],
                            campaign_id=campaign_id,  # type: ignore[arg-type]
                            message_id=row["id"],
                            scheduled_at=row["scheduled_at"],
                            deadline=row["scheduled_at"].replace(year=row["scheduled_at"].year + 1),
                        ).model_dump(mode="json"),
                    )
                    for row in rows[start : start + 500]
                )
            )
    finally:
        await broker.stop()
    return len(rows)


async def ours(settings: Settings, count: int, port: int) -> dict[str, float]:
    _, campaign_id = await seed_campaign(settings, count, DOMAINS, 0, ALWAYS_OPEN, smtp_port=port)
    queued = await queue_commands(settings, campaign_id)
    peaks = []
    with tempfile.TemporaryDirectory() as logs:
        async with contextlib.AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(
                    subprocess_service("sender", with_ports(settings, "sender"), Path(logs))
                )
                for _ in range(SENDERS)
            ]
            async with raw_connection(settings) as db:
                while await db.fetchval(  # noqa: ASYNC110 (no event tells "all settled")
                    "SELECT count(*) FROM messages"
                    " WHERE campaign_id = $1 AND status IN ('dispatched', 'sending')",
                    campaign_id,
                ):
                    await asyncio.sleep(0.2)
                figures = await db.fetchrow(
                    "SELECT count(*) FILTER (WHERE status = 'sent') AS sent,"
                    " extract(epoch FROM max(sent_at) - min(claimed_at)) AS seconds"
                    " FROM messages WHERE campaign_id = $1",
                    campaign_id,
                )
            peaks = [peak_rss_mb(worker.process.pid) for worker in workers]
    assert figures["sent"] == queued == count, f"{figures['sent']} of {count} sent: see the sender logs"
    return {"rate": count / float(figures["seconds"]), "peak_rss_mb": max(peaks)}


async def bare(count: int, port: int, sessions: int) -> float:
    """The same number of e-mails through bare aiosmtplib sessions, each reused for its share."""
    email = EmailMessage()
    email["From"] = "sales@d0.bench.example"
    email["To"] = "lead@lead.example"
    email["Subject"] = "Hello"
    email.set_content("Hi there,\n\n" + "A line of a cold e-mail of ordinary length.\n" * 20)
    email.add_alternative("<p>Hi there,</p>" + "<p>A line of a cold e-mail of ordinary length.</p>" * 20)
    data = email.as_bytes()

    async def session(share: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for _ in range(share):
            await client.sendmail("bounce@d0.bench.example", ["lead@lead.example"], data)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(session(count // sessions) for _ in range(sessions)))
    return (count // sessions * sessions) / (time.perf_counter() - started)


async def measure(settings: Settings, count: int) -> dict[str, float]:
    port = free_port()
    with smtp_sink(port):
        figures = await ours(settings, count, port)
        raw_rate = await bare(count, port, SENDERS * settings.sender_concurrency)
    return {"count": count, **figures, "raw_rate": raw_rate}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with bench_database(Settings()) as settings:
        print(json.dumps(asyncio.run(measure(settings, count))))


if __name__ == "__main__":
    main()
