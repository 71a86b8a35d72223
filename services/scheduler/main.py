"""Composition root of the scheduler: consumers, the dispatcher, the reconciler, the look-ups of receiving
providers, health and metrics (with the backlog and the queue depths)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from services.scheduler.gauges import refresher
from services.scheduler.handlers import build_router
from services.scheduler.loops import dispatch_forever, reconcile_forever
from services.scheduler.providers import ProviderLookups, resolve_forever
from services.scheduler.service import Scheduler
from shared.clock import Clock, utcnow
from shared.observability import health_routes
from shared.planning import zones
from shared.runtime import Runtime
from shared.settings import Settings


def create_app(settings: Settings | None = None, clock: Clock = utcnow) -> Starlette:
    settings = settings or Settings()
    zones.check_tables()  # here, rather than silently at a lead's first country
    runtime = Runtime.build(settings, "scheduler")
    scheduler = Scheduler(runtime.sessions, settings, clock)
    lookups = ProviderLookups(runtime.sessions, settings, clock, scheduler.providers_wanted)
    runtime.broker.include_router(build_router(runtime.topology, scheduler))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        dispatcher = dispatch_forever(
            scheduler, settings.database_url, settings.dispatch_batch_size, settings.poll_seconds
        )
        async with runtime.serving(
            dispatcher,
            reconcile_forever(scheduler, settings.poll_seconds),
            resolve_forever(lookups, settings.dispatch_batch_size, settings.poll_seconds),
        ):
            yield

    routes = health_routes(runtime.readiness_checks(), refresh=refresher(runtime, clock))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = runtime
    return app
