"""Broker adapters of the scheduler: parse the event, call one use case. Acked after its commit.

Which events the scheduler consumes is stated once, in `shared.messaging.CONSUMERS` (every service declares
the whole topology from it); here is what it does with each, and the router refuses to start on a mismatch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitRouter

from services.scheduler.service import Scheduler
from shared import events
from shared.messaging import CONSUMERS, Topology

UseCase = Callable[[Scheduler, Any], Awaitable[object]]


async def _message_sent(scheduler: Scheduler, event: events.MessageSent) -> None:
    await scheduler.plan_next_step(event.message_id)
    await scheduler.message_settled(event.campaign_id)


async def _message_bounced(scheduler: Scheduler, event: events.MessageBounced) -> None:
    if event.lead_id is not None:
        await scheduler.lead_left(event.lead_id)
    await scheduler.message_settled(event.campaign_id)


USE_CASES: dict[type[events.Event], UseCase] = {
    events.CampaignStarted: lambda scheduler, event: scheduler.start_campaign(event.campaign_id),
    events.CampaignPaused: lambda scheduler, event: scheduler.pause_campaign(event.campaign_id),
    events.CampaignResumed: lambda scheduler, event: scheduler.resume_campaign(event.campaign_id),
    events.CampaignStopped: lambda scheduler, event: scheduler.stop_campaign(event.campaign_id),
    events.MessageSent: _message_sent,
    events.MessageBounced: _message_bounced,
    # A retry, if any, is already planned by the sender; a final failure may finish the campaign.
    events.MessageFailed: lambda scheduler, event: scheduler.message_settled(event.campaign_id),
    events.LeadUnsubscribed: lambda scheduler, event: scheduler.lead_left(event.lead_id),
    events.LeadComplained: lambda scheduler, event: scheduler.lead_left(event.lead_id),
    events.LeadReplied: lambda scheduler, event: scheduler.lead_left(event.lead_id, only_followups=True),
    events.DomainPaused: lambda scheduler, event: scheduler.domain_paused(event.sending_domain_id),
    events.DomainResumed: lambda scheduler, event: scheduler.domain_resumed(event.sending_domain_id),
}


def build_router(topology: Topology, scheduler: Scheduler) -> RabbitRouter:
    consumed = set(CONSUMERS["scheduler"])
    if consumed != set(USE_CASES):
        raise RuntimeError(
            f"the scheduler's use cases do not match its subscriptions: {consumed ^ set(USE_CASES)}"
        )
    router = RabbitRouter()
    for event_type in CONSUMERS["scheduler"]:
        subscriber = router.subscriber(
            topology.queue("scheduler", event_type), topology.events, ack_policy=AckPolicy.NACK_ON_ERROR
        )
        subscriber(_handler(event_type, USE_CASES[event_type], scheduler))
    return router


def _handler(event_type: type[events.Event], use_case: UseCase, scheduler: Scheduler) -> Callable[..., Any]:
    """A subscriber for one event type: FastStream parses the body by the annotation it reads here."""

    async def handle(event: Any) -> None:
        await use_case(scheduler, event)

    handle.__annotations__ = {"event": event_type, "return": None}
    handle.__name__ = f"scheduler_{event_type.routing_key.replace('.', '_')}"
    return handle
