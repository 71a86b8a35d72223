"""Public tracking endpoints (SPEC §4): thin adapters over `Tracker`."""

from __future__ import annotations

import base64
import contextlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import structlog
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from services.tracker.esp.common import Refused
from services.tracker.inbound import NotUnderstood, OverLimit
from services.tracker.service import Tracker
from shared.workers import WorkersUnavailable

log = structlog.get_logger()

# The smallest transparent 1×1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}
MAX_PARAM = 512
MAX_AGENT = 500
# One counter for every pixel served (genuine opens are in the KPIs): the hot path pays one increment.
PIXEL_HITS = Counter("maildash_tracker_pixel_hits_total", "Open pixels served")


class OpenPixel:
    """`GET /track/open.gif` as a bare ASGI handler in front of the app: it serves every open of every e-mail,
    so it skips routing and the middleware stack that the other endpoints keep.

    Always the GIF with 200: a forged or malformed token looks like a valid one and records nothing."""

    PATH = "/track/open.gif"
    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"content-type", b"image/gif"),
        (b"content-length", str(len(PIXEL)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in PIXEL_HEADERS.items()),
    ]

    def __init__(self, app: ASGIApp, tracker: Tracker) -> None:
        self.app = app
        self.tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        PIXEL_HITS.inc()
        try:
            params = dict(parse_qsl(scope["query_string"].decode("latin-1"), max_num_fields=10))
        except ValueError:
            params = {}
        message, token = params.get("m", "")[:MAX_PARAM], params.get("t", "")[:MAX_PARAM]
        if message and token:
            header = next((v for k, v in scope["headers"] if k == b"user-agent"), b"")
            agent = header[:MAX_AGENT].decode("latin-1")
            ip = scope["client"][0] if scope.get("client") else None
            with contextlib.suppress(Exception):  # logged by the recorder; the reader still gets the image
                await self.tracker.record_open(message, token, agent, ip)
        await send({"type": "http.response.start", "status": 200, "headers": self.HEADERS})
        await send({"type": "http.response.body", "body": PIXEL if scope["method"] == "GET" else b""})


async def click(request: Request) -> Response:
    """302 only to a URL signed for this message when it was sent; anything else is 400 (no open redirect)."""
    params = request.query_params
    message, url, token = params.get("m", ""), params.get("u", ""), params.get("t", "")
    if len(url) <= MAX_URL and len(message) <= MAX_PARAM and len(token) <= MAX_PARAM:
        agent = request.headers.get("user-agent", "")
        if await request.app.state.tracker.follow_click(message, url, token, agent):
            return RedirectResponse(url, status_code=302, headers={"Cache-Control": "no-store"})
    return PlainTextResponse("this link is not valid", status_code=400)


MAX_TOKEN = 200
MAX_URL = 4096
PAGE = """<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width"><title>{title}</title>
<body style="font-family:sans-serif;max-width:32em;margin:3em auto">{body}</body></html>"""
CONFIRM = """<h1>Unsubscribe</h1><p>You will receive no more e-mails from this sender.</p>
<form method="post"><button type="submit">Unsubscribe</button></form>"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        PAGE.format(title=title, body=body), status_code=status, headers={"Cache-Control": "no-store"}
    )


async def unsubscribe(request: Request) -> Response:
    """GET shows a confirmation (mail scanners follow links; they must not unsubscribe anyone); POST is the
    RFC 8058 one-click and takes effect at once. An invalid token is a 404 page."""
    token = request.path_params["token"]
    target = request.app.state.tracker.unsubscribe_target(token) if len(token) <= MAX_TOKEN else None
    if target is None:
        return page("Link not valid", "<h1>This unsubscribe link is not valid</h1>", status=404)
    if request.method == "GET":
        return page("Unsubscribe", CONFIRM)
    await request.app.state.tracker.unsubscribe(target)
    return page(
        "Unsubscribed", "<h1>You are unsubscribed</h1><p>You will receive no more e-mails from us.</p>"
    )


# SPEC §6 names `X-Inbound-Secret`; `X-Maildash-Secret` came first here and stays for existing pipes.
SECRET_HEADERS = ("x-inbound-secret", "x-maildash-secret")
RETRY_BUSY_SECONDS = 5  # Retry-After of a mail refused while every reader is busy and the backlog full


def _answer(status: int, data: Any = None, error: str | None = None, code: str | None = None) -> JSONResponse:
    body = {"data": data, "error": error} | ({"error_code": code} if code else {})
    return JSONResponse(body, status_code=status)


def _authenticated(request: Request, secret: str) -> bool:
    """One secret header at least, and each one given holds the secret (compared in constant time)."""
    given = [request.headers.get(name) for name in SECRET_HEADERS]
    checks = [hmac.compare_digest(value.encode(), secret.encode()) for value in given if value is not None]
    return bool(checks) and all(checks)


async def _body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is larger than `limit` (the rest is never read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            return None
    return bytes(raw)


def inbound_intake(use_case: str) -> Callable[[Request], Awaitable[Response]]:
    """`POST` the raw e-mail as the body, with the shared secret in `X-Inbound-Secret`; the envelope
    recipient may come as `?recipient=` (a mail server's pipe knows it). 422 says why a mail was not used."""

    async def intake(request: Request) -> Response:
        settings = request.app.state.runtime.settings
        if not _authenticated(request, settings.inbound_secret):
            return _answer(401, error="missing or wrong X-Inbound-Secret header", code="unauthorized")
        raw = await _body(request, settings.inbound_max_bytes)
        if raw is None:
            limit = f"{settings.inbound_max_bytes / 1024 / 1024:g} MB"
            return _answer(413, error=f"an inbound mail may be at most {limit}", code="payload_too_large")
        recipient = request.query_params.get("recipient", "")[:320] or None
        try:
            result = await getattr(request.app.state.tracker, use_case)(raw, recipient)
        except OverLimit as error:
            return _answer(422, error=str(error), code="over_limit")
        except NotUnderstood as error:
            return _answer(422, error=str(error), code="not_understood")
        except WorkersUnavailable:  # not the mail's fault: its sender should deliver it again shortly
            busy = _answer(503, error="mail readers are busy; deliver it again later", code="unavailable")
            busy.headers["Retry-After"] = str(RETRY_BUSY_SECONDS)
            return busy
        return _answer(200, result)

    return intake


async def esp_webhook(request: Request) -> Response:
    """An ESP's events (`services.tracker.esp`), proven by the provider's own authentication: 200 with what
    each event did; 4xx, with nothing recorded, for anything the provider did not send as it is."""
    settings = request.app.state.runtime.settings
    provider = request.path_params["provider"]
    raw = await _body(request, settings.esp_max_bytes)
    if raw is None:
        limit = f"{settings.esp_max_bytes / 1024 / 1024:g} MB"
        return _answer(413, error=f"a webhook request may be at most {limit}", code="payload_too_large")
    try:
        result = await request.app.state.tracker.esp.receive(
            provider, request.path_params["token"], request.headers, raw
        )
    except Refused as refused:
        log.info("tracker.esp.refused", provider=provider[:20], status=refused.status, code=refused.code)
        answer = _answer(refused.status, error=str(refused), code=refused.code)
        if refused.status == 503:
            answer.headers["Retry-After"] = str(RETRY_BUSY_SECONDS)
        return answer
    return _answer(200, result)


routes = [
    Route("/webhooks/esp/{provider}/{token}", esp_webhook, methods=["POST"]),
    Route("/inbound/bounces", inbound_intake("bounce"), methods=["POST"]),
    Route("/inbound/replies", inbound_intake("reply"), methods=["POST"]),
    Route("/track/click", click),
    Route("/u/{token}", unsubscribe, methods=["GET", "POST"]),
]
