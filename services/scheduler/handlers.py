"""Broker adapters of the scheduler: parse the event, call one use case. Acked after its commit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitRouter

from services.scheduler.service import Scheduler
from shared.events import CampaignStarted, Event, MessageBounced, MessageFailed, MessageSent
from shared.messaging import Topology

Handler = Callable[..., Awaitable[None]]


def build_router(topology: Topology, scheduler: Scheduler) -> RabbitRouter:
    router = RabbitRouter()

    def subscribe(event: type[Event]) -> Callable[[Handler], Any]:
        return router.subscriber(
            topology.queue("scheduler", event), topology.events, ack_policy=AckPolicy.NACK_ON_ERROR
        )

    @subscribe(CampaignStarted)
    async def campaign_started(event: CampaignStarted) -> None:
        await scheduler.start_campaign(event.campaign_id)

    @subscribe(MessageSent)
    async def message_sent(event: MessageSent) -> None:
        await scheduler.message_settled(event.campaign_id)

    @subscribe(MessageBounced)
    async def message_bounced(event: MessageBounced) -> None:
        await scheduler.message_settled(event.campaign_id)

    @subscribe(MessageFailed)
    async def message_failed(event: MessageFailed) -> None:
        await scheduler.message_settled(event.campaign_id)

    return router
