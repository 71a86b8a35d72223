"""Broker adapters of the scheduler: parse the event, call one use case. Acked after its commit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitRouter

from services.scheduler.service import Scheduler
from shared.events import (
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    CampaignStopped,
    Event,
    LeadComplained,
    LeadReplied,
    LeadUnsubscribed,
    MessageBounced,
    MessageFailed,
    MessageSent,
)
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

    @subscribe(CampaignPaused)
    async def campaign_paused(event: CampaignPaused) -> None:
        await scheduler.pause_campaign(event.campaign_id)

    @subscribe(CampaignResumed)
    async def campaign_resumed(event: CampaignResumed) -> None:
        await scheduler.resume_campaign(event.campaign_id)

    @subscribe(CampaignStopped)
    async def campaign_stopped(event: CampaignStopped) -> None:
        await scheduler.stop_campaign(event.campaign_id)

    @subscribe(MessageSent)
    async def message_sent(event: MessageSent) -> None:
        await scheduler.plan_followup(event.message_id)
        await scheduler.message_settled(event.campaign_id)

    @subscribe(MessageBounced)
    async def message_bounced(event: MessageBounced) -> None:
        if event.lead_id is not None:
            await scheduler.lead_left(event.lead_id)
        await scheduler.message_settled(event.campaign_id)

    @subscribe(LeadUnsubscribed)
    async def lead_unsubscribed(event: LeadUnsubscribed) -> None:
        await scheduler.lead_left(event.lead_id)

    @subscribe(LeadComplained)
    async def lead_complained(event: LeadComplained) -> None:
        await scheduler.lead_left(event.lead_id)

    @subscribe(LeadReplied)
    async def lead_replied(event: LeadReplied) -> None:
        await scheduler.lead_left(event.lead_id, only_followups=True)

    @subscribe(MessageFailed)
    async def message_failed(event: MessageFailed) -> None:
        # A retry, if any, is already planned by the sender; a final failure may finish the campaign.
        await scheduler.message_settled(event.campaign_id)

    return router
