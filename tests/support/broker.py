"""What RabbitMQ holds for a test run's topology, read through the broker itself (AMQP passive declares)."""

from __future__ import annotations

import aio_pika

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


async def dead_letter_count(settings: Settings) -> int:
    """Messages in `<prefix>.dead-letters`: each one failed all its deliveries."""
    return (await message_counts(settings))[Topology(settings.broker_prefix).dead_letters.name]
