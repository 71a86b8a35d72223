"""Dispatch latency: from a message's slot to its `SendMessage` reaching the sender queue, while 100,000
other messages wait planned. Beside it, the building block: RabbitMQ publish (confirmed) → consume.

Run as `python -m bench.dispatch BACKLOG`; prints JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime

import aio_pika
import uvicorn

from bench.common import ALWAYS_OPEN, OFFICE_HOURS, bench_database, percentile, seed_campaign
from services.scheduler.main import create_app as create_scheduler
from services.scheduler.service import Scheduler
from shared.clock import utcnow
from shared.db import create_engine, session_factory
from shared.events import SendMessage
from shared.messaging import Topology
from shared.settings import Settings


async def raw_round_trips(settings: Settings, count: int) -> list[float]:
    """The building block: a persistent, confirmed publish and its consumption, one at a time."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(exclusive=True)
        latencies: list[float] = []
        async with queue.iterator() as messages:
            for _ in range(count):
                started = time.perf_counter()
                await channel.default_exchange.publish(
                    aio_pika.Message(b"{}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue.name,
                )
                message = await anext(messages)
                await message.ack()
                latencies.append(time.perf_counter() - started)
        return latencies


async def measure(settings: Settings, backlog: int) -> dict[str, float]:
    settings = settings.model_copy(update={"poll_seconds": 5.0})
    engine = create_engine(settings.database_url, pool_size=2)
    scheduler = Scheduler(session_factory(engine), settings, utcnow)
    _, backlog_campaign = await seed_campaign(settings, backlog, 50, 1200, OFFICE_HOURS)
    await scheduler.start_campaign(backlog_campaign)
    _, due_campaign = await seed_campaign(settings, 200, 20, 2, ALWAYS_OPEN)  # 20 slots every 2 s, for 20 s

    server = uvicorn.Server(uvicorn.Config(create_scheduler(settings), port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    connection = await aio_pika.connect(settings.amqp_url)
    latencies: list[float] = []
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for this)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # topology declared
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(settings.broker_prefix).queue("sender", SendMessage).name)
        await scheduler.start_campaign(due_campaign)
        async with queue.iterator() as messages:
            async for message in messages:
                command = SendMessage.model_validate_json(message.body)
                latencies.append((datetime.now(UTC) - command.scheduled_at).total_seconds())
                await message.ack()
                if len(latencies) == 200:
                    break
    finally:
        await connection.close()
        server.should_exit = True
        await serving
        await engine.dispose()
    raw = await raw_round_trips(settings, 200)
    return {
        "backlog": backlog,
        "p50_s": percentile(latencies, 0.5),
        "p99_s": percentile(latencies, 0.99),
        "raw_p50_s": percentile(raw, 0.5),
        "raw_p99_s": percentile(raw, 0.99),
    }


def main() -> None:
    backlog = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with bench_database(Settings()) as settings:
        print(json.dumps(asyncio.run(measure(settings, backlog))))


if __name__ == "__main__":
    main()
