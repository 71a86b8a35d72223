"""What RabbitMQ holds for a test run, read from the broker itself."""

from __future__ import annotations

import aio_pika

from shared.messaging import Topology
from shared.settings import Settings


async def dead_letters(settings: Settings) -> int:
    """How many messages wait in `<prefix>.dead-letters`: commands and events some consumer gave up on after
    `x-delivery-limit` deliveries. A run that keeps its contract leaves none."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(Topology(settings.broker_prefix).dead_letters.name, passive=True)
        count = queue.declaration_result.message_count
    return int(count or 0)
