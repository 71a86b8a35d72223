"""What every service process holds: settings, database engine and sessions, broker, topology.

Built once in each service's `create_app`, started and stopped by its lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from faststream.rabbit import RabbitBroker
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared import tracing
from shared.db import create_engine, session_factory
from shared.messaging import OutboxRelay, Topology, create_broker, running
from shared.observability import ReadinessCheck
from shared.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = structlog.get_logger()


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: RabbitBroker
    topology: Topology
    tracer_provider: TracerProvider | None  # None while tracing is off

    @classmethod
    def build(cls, settings: Settings, service: str, prefetch: int | None = None) -> Runtime:
        engine = create_engine(settings.database_url)
        tracer_provider = tracing.configure(settings.otlp_endpoint, service)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            broker=create_broker(
                settings.amqp_url, prefetch or settings.broker_prefetch, tracer_provider=tracer_provider
            ),
            topology=Topology(settings.broker_prefix),
            tracer_provider=tracer_provider,
        )

    async def start_broker(self) -> None:
        await self.broker.connect()
        await self.topology.declare(self.broker)
        await self.broker.start()

    async def start_broker_when_reachable(self, retry_seconds: float = 2.0) -> None:
        """Serve even while RabbitMQ is away: writes wait in the outbox until the broker answers.

        After the first connection, aio-pika's robust connection reconnects by itself.
        """
        while True:
            try:
                await self.start_broker()
            except Exception as error:
                log.warning(
                    "broker.connect.retry", error=str(error) or type(error).__name__, every=retry_seconds
                )
                await asyncio.sleep(retry_seconds)
            else:
                log.info("broker.connect.ok")
                return

    async def stop(self) -> None:
        await self.broker.stop()  # waits for in-flight handlers (graceful_timeout), acks nothing unfinished
        await self.engine.dispose()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()  # exports the spans still batched

    @contextlib.asynccontextmanager
    async def serving(self, *loops: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
        """A service's life: broker (once reachable), outbox relay, its own loops; then a graceful stop."""
        async with contextlib.AsyncExitStack() as stack:
            for loop in (self.start_broker_when_reachable(), self.outbox_relay().run(), *loops):
                await stack.enter_async_context(running(loop))
            yield
        await self.stop()

    def outbox_relay(self) -> OutboxRelay:
        return OutboxRelay(
            self.sessions,
            self.broker,
            self.topology,
            self.settings.database_url,
            batch_size=self.settings.dispatch_batch_size,
            poll_seconds=self.settings.poll_seconds,
            traced=self.tracer_provider is not None,
        )

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        """The api and tracker serve from PostgreSQL while the broker is away (writes wait in the outbox)."""

        async def broker() -> bool:
            return await self.broker.ping(timeout=2.0)

        return {"database": database_check(self.engine), "broker": broker}


def database_check(engine: AsyncEngine) -> ReadinessCheck:
    async def database() -> bool:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return True

    return database
