"""Composition root of the sender: competing consumers on the send queue, health and metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from services.sender.handlers import build_router
from services.sender.service import Sender
from shared.clock import Clock, utcnow
from shared.observability import health_routes
from shared.runtime import Runtime
from shared.settings import Settings


def create_app(settings: Settings | None = None, clock: Clock = utcnow) -> Starlette:
    settings = settings or Settings()
    # Prefetch matches the concurrency: a worker holds no more messages than it can work on.
    runtime = Runtime.build(settings, "sender", prefetch=settings.sender_concurrency)
    sender = Sender(settings, clock)
    runtime.broker.include_router(build_router(runtime.topology, sender))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # The sender closes after the broker drained: no attempt is using a connection any more.
        async with sender, runtime.serving():
            yield

    app = Starlette(routes=health_routes(runtime.readiness_checks()), lifespan=lifespan)
    app.state.runtime = runtime
    return app
