"""The broker topology, declared in one place, and the outbox relay that publishes to it.

Layout (names carry `Settings.broker_prefix`, so test runs never touch a development stack):

    <p>.events   topic exchange; routing key = the event's `routing_key` (campaign.started, message.send …)
    <p>.<consumer>.<routing key>   one durable quorum queue per handler, bound to its routing key,
                 `x-delivery-limit` 5, dead-lettered to
    <p>.dead     fanout exchange  →  <p>.dead-letters  (poison messages wait there for a human)

Every service declares the whole topology at start, so an event published while its consumer is down waits
in its queue. Publishing is persistent, mandatory and confirmed; services never publish directly: they write
`outbox` rows in the transaction that makes the change, and `OutboxRelay` publishes them after commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aio_pika.abc import AbstractChannel
from faststream import BaseMiddleware, StreamMessage
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import Channel
from faststream.rabbit.schemas.queue import QueueType
from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import tracing
from shared.db import is_transient
from shared.db.models import Campaign, OutboxRow
from shared.db.notify import Listener
from shared.events import (
    ALL_EVENTS,
    CampaignPaused,
    CampaignResumed,
    CampaignStarted,
    CampaignStopped,
    DomainPaused,
    DomainResumed,
    Event,
    LeadComplained,
    LeadReplied,
    LeadUnsubscribed,
    MessageBounced,
    MessageFailed,
    MessageSent,
    SendMessage,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger()

DELIVERY_LIMIT = 5
# How long a handler waits for the database to come back before its delivery fails and counts.
DATABASE_PATIENCE_SECONDS = 120.0
OUTBOX_CHANNEL = "maildash_outbox"
OUTBOX_LINGER_SECONDS = 0.02

# Which service consumes which event: one queue each.
CONSUMERS: dict[str, tuple[type[Event], ...]] = {
    "scheduler": (
        CampaignStarted,
        CampaignPaused,
        CampaignResumed,
        CampaignStopped,
        MessageSent,
        MessageBounced,
        MessageFailed,
        LeadUnsubscribed,
        LeadReplied,
        LeadComplained,
        DomainPaused,
        DomainResumed,
    ),
    "sender": (SendMessage,),
}
CONSUMED = frozenset(event.routing_key for events in CONSUMERS.values() for event in events)
# Events no service consumes (an open, a click, a campaign's completion): written to the outbox for the
# outgoing webhooks (its trigger fans them out), and published for whoever binds a queue to them.
UNCONSUMED = frozenset(event.routing_key for event in ALL_EVENTS) - CONSUMED


@dataclass(frozen=True)
class Topology:
    prefix: str

    @property
    def events(self) -> RabbitExchange:
        return RabbitExchange(f"{self.prefix}.events", type=ExchangeType.TOPIC, durable=True)

    @property
    def dead(self) -> RabbitExchange:
        return RabbitExchange(f"{self.prefix}.dead", type=ExchangeType.FANOUT, durable=True)

    @property
    def dead_letters(self) -> RabbitQueue:
        return RabbitQueue(f"{self.prefix}.dead-letters", queue_type=QueueType.QUORUM)

    def queue(self, consumer: str, event: type[Event]) -> RabbitQueue:
        return RabbitQueue(
            f"{self.prefix}.{consumer}.{event.routing_key}",
            queue_type=QueueType.QUORUM,
            routing_key=event.routing_key,
            arguments={"x-delivery-limit": DELIVERY_LIMIT, "x-dead-letter-exchange": self.dead.name},
        )

    def all_queues(self) -> list[RabbitQueue]:
        return [self.queue(consumer, event) for consumer, events in CONSUMERS.items() for event in events]

    async def declare(self, broker: RabbitBroker) -> None:
        events = await broker.declare_exchange(self.events)
        dead = await broker.declare_exchange(self.dead)
        dead_letters = await broker.declare_queue(self.dead_letters)
        await dead_letters.bind(dead)
        for queue in self.all_queues():
            declared = await broker.declare_queue(queue)
            await declared.bind(events, routing_key=queue.routing())

    async def delete(self, broker: RabbitBroker) -> None:
        """Remove every queue and exchange (test runs clean up after themselves)."""
        async with _channel(broker) as channel:
            for queue in [*self.all_queues(), self.dead_letters]:
                await channel.queue_delete(queue.name)
            for exchange in (self.events, self.dead):
                await channel.exchange_delete(exchange.name)

    async def depths(self, broker: RabbitBroker) -> dict[str, int]:
        """Messages ready in each queue, named without the prefix. A passive declare creates nothing, and asks
        the broker itself: FastStream's own declarations are cached with the counts of their day."""
        depths = {}
        async with _channel(broker) as channel:
            for queue in [*self.all_queues(), self.dead_letters]:
                declared = await channel.declare_queue(queue.name, passive=True)
                count = declared.declaration_result.message_count
                depths[queue.name.removeprefix(f"{self.prefix}.")] = count or 0
        return depths


@contextlib.asynccontextmanager
async def _channel(broker: RabbitBroker) -> AsyncIterator[AbstractChannel]:
    """A channel of its own on the broker's connection: a failed declare closes only it."""
    if broker._connection is None:
        raise ConnectionError("not connected to RabbitMQ")
    channel = await broker._connection.channel()
    try:
        yield channel
    finally:
        await channel.close()


async def remove_topology(amqp_url: str, prefix: str) -> None:
    """Delete every queue and exchange of a prefix (test and benchmark runs clean up after themselves)."""
    broker = create_broker(amqp_url, prefetch=1)
    await broker.connect()
    try:
        await Topology(prefix).delete(broker)
    finally:
        await broker.stop()


class WaitForTheDatabase(BaseMiddleware):
    """A handler that failed because the database is away runs again once it answers, its message still
    unacknowledged. Redelivered at once instead, the message would use up its `DELIVERY_LIMIT` within a
    restart of PostgreSQL and be dead-lettered though nothing is wrong with it. Handlers are idempotent."""

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        loop = asyncio.get_running_loop()
        delay, deadline = 0.5, loop.time() + DATABASE_PATIENCE_SECONDS
        while True:
            try:
                return await call_next(msg)
            except Exception as error:
                if not is_transient(error) or loop.time() + delay > deadline:
                    raise
                log.warning("consumer.database.away", message_id=msg.message_id, error=repr(error)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def create_broker(
    amqp_url: str,
    prefetch: int,
    graceful_timeout: float = 30.0,
    tracer_provider: TracerProvider | None = None,
) -> RabbitBroker:
    """Publisher confirms on, unroutable publishes raise, prefetch bounds each handler's concurrency. With a
    tracer provider, every publish and every handler is a span, the W3C trace context in the headers (the
    outermost middleware: a handler waiting for the database stays one span)."""
    traced = []
    if tracer_provider is not None:
        from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware  # only when on: ~30 ms

        traced = [RabbitTelemetryMiddleware(tracer_provider=tracer_provider)]
    return RabbitBroker(
        amqp_url,
        default_channel=Channel(prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True),
        graceful_timeout=graceful_timeout,
        middlewares=[*traced, WaitForTheDatabase],
        logger=None,
    )


def publishing(routing_key: str) -> dict[str, Any]:
    """How an event is published (the AsyncAPI document, shared/asyncapi.py, declares the same): persistent,
    and mandatory unless no service consumes it: a row that reaches no queue then fails and stays."""
    return {"persist": True, "mandatory": routing_key not in UNCONSUMED}


async def publish(
    broker: RabbitBroker,
    topology: Topology,
    routing_key: str,
    payload: dict[str, Any],
    trace_context: dict[str, Any] | None = None,
) -> None:
    """Persistent, mandatory, confirmed: returns only once RabbitMQ has taken responsibility. Published in
    the trace context the event was written in, when it was written in one."""
    with tracing.resumed(trace_context):
        await broker.publish(
            payload,
            exchange=topology.events,
            routing_key=routing_key,
            message_id=str(payload.get("event_id", "")),
            message_type=routing_key,
            **publishing(routing_key),
        )


async def enqueue(session: AsyncSession, *events: Event) -> None:
    """Write events to the outbox inside the caller's transaction (published after it commits)."""
    if events:
        context = tracing.carrier()
        rows = [
            {"routing_key": e.routing_key, "payload": e.model_dump(mode="json"), "trace_context": context}
            for e in events
        ]
        await session.execute(insert(OutboxRow), rows)


class OutboxRelay:
    """Publishes committed outbox rows: claim with SKIP LOCKED, publish with confirms, delete, commit.

    A crash between publish and commit re-publishes the batch; consumers are idempotent by `event_id` or by
    status guards, so at-least-once here is safe. NOTIFY wakes the relay at once; `poll_seconds` is the net.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        broker: RabbitBroker,
        topology: Topology,
        database_url: str,
        batch_size: int = 500,
        poll_seconds: float = 5.0,
        traced: bool = False,
    ) -> None:
        self._sessions = sessions
        self._broker = broker
        self._topology = topology
        self._listener = Listener(database_url, OUTBOX_CHANNEL)
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._trace_context = _trace_context_of_row() if traced else OutboxRow.trace_context

    async def drain_once(self) -> int:
        """Publish one batch; only rows RabbitMQ confirmed are deleted, so one bad row holds up nothing else.

        Returns how many were published (0 also when every publish failed: the broker is away)."""
        async with self._sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(OutboxRow.id, OutboxRow.routing_key, OutboxRow.payload, self._trace_context)
                    .order_by(OutboxRow.id)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            results = await asyncio.gather(
                *(
                    publish(self._broker, self._topology, r.routing_key, r.payload, r.trace_context)
                    for r in rows
                ),
                return_exceptions=True,
            )
            published = []
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning(
                        "outbox.publish.failed", row=row.id, routing_key=row.routing_key, error=repr(result)
                    )
                else:
                    published.append(row.id)
            if published:
                await session.execute(delete(OutboxRow).where(OutboxRow.id.in_(published)))
        return len(published)

    async def run(self) -> None:
        async with self._listener:
            while True:
                try:
                    published = await self.drain_once()
                except Exception as error:  # the database is away: the rows stay, try again later
                    log.warning("outbox.drain.retry", error=str(error) or type(error).__name__)
                    published = 0
                if published < self._batch_size:
                    # Caught up, or the broker is away: sleep until a NOTIFY, at most `poll_seconds`.
                    await self._listener.wait(self._poll_seconds)
                    # Every service's relay hears every NOTIFY: waking each for every single commit
                    # had them race for one row at a time. A short linger lets a burst become one batch.
                    await asyncio.sleep(OUTBOX_LINGER_SECONDS)


def _trace_context_of_row() -> Any:
    """The trace context a row is published in: the one it was written in, else its campaign's. An event
    of a message or campaign that was written outside any trace (the sender's outcome, the tracker's opens
    and bounces, written by SQL of their own) so joins the trace of its campaign."""
    campaign_id = OutboxRow.payload["campaign_id"].astext.cast(PgUUID(as_uuid=True))
    of_campaign = select(Campaign.trace_context).where(Campaign.id == campaign_id).scalar_subquery()
    return func.coalesce(OutboxRow.trace_context, of_campaign).label("trace_context")


@contextlib.asynccontextmanager
async def running(coroutine: Any):  # type: ignore[no-untyped-def]
    """Run a background loop for the duration of a block; cancel it on exit."""
    task = asyncio.create_task(coroutine)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
