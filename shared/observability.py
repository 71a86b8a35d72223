"""Structured logs, Prometheus metrics and health/readiness routes shared by every service."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ReadinessCheck = Callable[[], Awaitable[bool]]
Refresh = Callable[[], Awaitable[None]]  # sets gauges that are read from elsewhere, before a scrape
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REFRESH_TIMEOUT_SECONDS = 5.0  # a scrape answers with the gauges' last values rather than not at all

log = structlog.get_logger()

# Labels stay few: a route's template, never its path (ids would make a series per campaign or token).
REQUESTS = Counter("maildash_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram("maildash_http_request_duration_seconds", "HTTP request latency", ["method", "route"])
REFRESH_FAILURES = Counter("maildash_metrics_refresh_failures_total", "Scrapes whose gauges were not read")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the label of a request no route takes (never its path: scanners try thousands)


class RequestIds:
    """Every HTTP request gets an id, the caller's `X-Request-ID` when it is a sane one: it is in the
    request's log lines, in `request.state.request_id` and in the answer's `X-Request-ID` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


class RequestMetrics:
    """Counts and times every HTTP request under its route's template (`/api/v1/campaigns/{campaign_id}`).

    The request's path is matched against the templates here rather than read from what the router leaves in
    the scope: a request the api's gate refuses never reaches the router, and FastAPI keeps the prefixes of
    included routers out of `scope["route"]`. `templates` is read at the first request, once every route
    is in place."""

    def __init__(self, app: ASGIApp, templates: Callable[[], Iterable[str]]) -> None:
        self.app = app
        self._templates = templates
        self._match: Callable[[str], re.Match[str] | None] | None = None
        self._ordered: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless an answer starts: the app raised

        async def send_watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_watched)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = self.template(scope["path"])
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - started)

    def template(self, path: str) -> str:
        if self._match is None:
            # Literal segments first, as a router finds them: `/leads/import` is not `/leads/{lead_id}`.
            ordered = sorted(dict.fromkeys(self._templates()), key=lambda template: template.count("{"))
            self._match, self._ordered = _alternation(ordered).fullmatch, ordered
        found = self._match(path)
        return self._ordered[int(found.lastgroup[1:])] if found and found.lastgroup else UNMATCHED


def _alternation(templates: list[str]) -> re.Pattern[str]:
    """One pattern for all the templates (tried in order, in C: one scan instead of a Python loop over
    dozens of patterns); the group `t<i>` that matched names the template."""
    branches = []
    for number, template in enumerate(templates):
        parts = re.split(r"(\{[^}]*\})", template)
        pattern = "".join(
            (".*" if part.endswith(":path}") else "[^/]+") if part.startswith("{") else re.escape(part)
            for part in parts
        )
        branches.append(f"(?P<t{number}>{pattern})")
    return re.compile("|".join(branches))


def route_templates(routes: Iterable[BaseRoute]) -> list[str]:
    """The templates of an app's own routes; a mount's takes every path below it."""
    return [
        f"{route.path}/{{path:path}}" if isinstance(route, Mount) else route.path
        for route in routes
        if isinstance(route, Route | Mount)
    ]


def configure_logging(service: str, log_format: str = "console", level: str = "INFO") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)


def health_routes(
    checks: dict[str, ReadinessCheck], optional: frozenset[str] = frozenset(), refresh: Refresh | None = None
) -> list[Route]:
    """`/healthz` (the process answers), `/readyz` (what it needs answers), `/metrics`.

    Checks named in `optional` are reported but do not make the service unready. `refresh` sets the gauges
    that are read from PostgreSQL or RabbitMQ: on scrape, so nothing is read while nobody looks.
    """

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        results = {}
        for name, check in checks.items():
            try:
                results[name] = await check()
            except Exception:
                results[name] = False
        ready = all(ok for name, ok in results.items() if name not in optional)
        return JSONResponse({"ready": ready, "checks": results}, status_code=200 if ready else 503)

    async def metrics(_: Request) -> Response:
        if refresh is not None:
            try:
                await asyncio.wait_for(refresh(), REFRESH_TIMEOUT_SECONDS)
            except Exception as error:
                REFRESH_FAILURES.inc()
                log.warning("metrics.refresh.failed", error=str(error) or type(error).__name__)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
