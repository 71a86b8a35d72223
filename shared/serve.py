"""Run a service's ASGI app with uvicorn: SIGTERM → lifespan shutdown → in-flight work finishes."""

from __future__ import annotations

import gc
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from shared.observability import configure_logging
from shared.settings import Settings


def serve(
    service: str, create_app: Callable[[Settings], ASGIApp], host_port: Callable[[Settings], tuple[str, int]]
) -> None:
    settings = Settings()
    configure_logging(service, settings.log_format, settings.log_level)
    host, port = host_port(settings)
    app = create_app(settings)
    # The imported libraries are most of the heap and live for ever: keep the collector from rescanning them,
    # which otherwise stalls every request in flight for tens of milliseconds now and then.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
