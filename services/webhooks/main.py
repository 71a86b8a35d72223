"""Composition root of the outgoing webhooks' worker (`python -m services.webhooks`): the deliverer, and
/healthz, /readyz and /metrics on `webhooks_port`. It needs PostgreSQL only: deliveries come from the
outbox's trigger, not from the broker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette

from services.webhooks.service import Deliverer
from shared.clock import Clock, utcnow
from shared.db import create_engine, session_factory
from shared.messaging import running
from shared.observability import health_routes
from shared.runtime import database_check
from shared.settings import Settings


def create_app(settings: Settings | None = None, clock: Clock = utcnow) -> Starlette:
    settings = settings or Settings()
    engine = create_engine(settings.database_url)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Redirects are not followed: a 3xx is a failure, so a receiver cannot send us somewhere else. The
        # timeout bounds each phase; the deliverer bounds the whole request.
        limits = httpx.Limits(max_connections=settings.webhook_concurrency)
        timeout = settings.webhook_timeout_seconds
        async with httpx.AsyncClient(follow_redirects=False, limits=limits, timeout=timeout) as client:
            deliverer = Deliverer(session_factory(engine), settings, clock, client)
            async with running(deliverer.run()):
                yield
        await engine.dispose()

    return Starlette(routes=health_routes({"database": database_check(engine)}), lifespan=lifespan)
