"""Composition root of the tracker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp

from services.tracker.routes import OpenPixel, routes
from services.tracker.service import Tracker
from shared.clock import Clock, utcnow
from shared.observability import RequestMetrics, health_routes, route_templates
from shared.runtime import Runtime
from shared.settings import Settings


def create_app(settings: Settings | None = None, clock: Clock = utcnow) -> ASGIApp:
    settings = settings or Settings()
    runtime = Runtime.build(settings, "tracker")

    tracker = Tracker(runtime.sessions, settings, clock)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with runtime.serving(tracker.opens.run()), tracker.readers:
            yield

    served = [*routes, *health_routes(runtime.readiness_checks(), optional=frozenset({"broker"}))]
    app = Starlette(
        routes=served,
        middleware=[Middleware(RequestMetrics, templates=lambda: route_templates(served))],
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.tracker = tracker
    return OpenPixel(app, tracker)  # outermost: the pixel skips even Starlette's error middleware
