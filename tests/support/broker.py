"""What RabbitMQ holds for a test run's topology, read through the broker itself (AMQP passive declares)."""

from __future__ import annotations

import aio_pika
from sqlalchemy import func, select

from shared.db import create_engine, session_factory
from shared.db.models import OutboxRow
from shared.messaging import Topology
from shared.settings import Settings


async def message_counts(settings: Settings) -> dict[str, int]:
    """Messages ready in each queue of the run's topology, dead letters included (not those in flight)."""
    topology = Topology(settings.broker_prefix)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        counts = {}
        for queue in [*topology.all_queues(), topology.dead_letters]:
            declared = await channel.declare_queue(queue.name, passive=True)
            counts[queue.name] = declared.declaration_result.message_count or 0
        return counts


async def take_dead_letters(settings: Settings) -> list[str]:
    """Empty `<prefix>.dead-letters` and describe each message there (it failed all its deliveries): the
    queue it died in and its body. Taking them keeps one test's poison out of the next test's count."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Topology(settings.broker_prefix).dead_letters.name, passive=True)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            deaths = message.headers.get("x-death") or [{}]
            taken.append(f"{deaths[0].get('queue', '?')}: {message.body[:200].decode(errors='replace')}")
        return taken


async def outbox_rows(settings: Settings) -> int:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            return int(await session.scalar(select(func.count()).select_from(OutboxRow)) or 0)
    finally:
        await engine.dispose()


async def all_consumed(settings: Settings) -> bool:
    """Every event the services announced is published and taken by its consumer: nothing waits in the outbox
    or in a consumer's queue. A message some consumer keeps failing on is then in the dead letters (it is
    redelivered at once, up to the queue's delivery limit)."""
    counts = await message_counts(settings)
    consumers = [queue.name for queue in Topology(settings.broker_prefix).all_queues()]
    return await outbox_rows(settings) == 0 and not any(counts[name] for name in consumers)
