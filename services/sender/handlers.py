"""Broker adapter of the sender: one `SendMessage` → one delivery attempt; acked after it is settled."""

from __future__ import annotations

from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitRouter

from services.sender.service import Sender
from shared.events import SendMessage
from shared.messaging import Topology


def build_router(topology: Topology, sender: Sender) -> RabbitRouter:
    router = RabbitRouter()

    @router.subscriber(
        topology.queue("sender", SendMessage), topology.events, ack_policy=AckPolicy.NACK_ON_ERROR
    )
    async def send_message(command: SendMessage) -> None:
        await sender.handle(command)

    return router
