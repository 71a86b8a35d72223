"""What the api checks before it reads a request body: the bearer token, then the body's size as it streams.

A request to a protected route without a valid token (signature, expiry, audience) answers 401 before one
byte of its body is read; the full check of its user stays in the `current_principal` dependency. A body is
read only up to its route's limit: a declared `Content-Length` over it answers 413 at once, a longer stream
413 as soon as the byte that crosses it arrives, so the rest is never read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.kit.auth import decode_token
from services.api.kit.envelope import ApiError, error_response
from shared.settings import Settings

PREFIX = "/api/v1"
# The login, and the OAuth2 provider's redirect back (services/api/oauth: its `state` proves the flow).
PUBLIC = frozenset({("POST", f"{PREFIX}/auth/token"), ("GET", f"{PREFIX}/oauth/callback")})
MULTIPART_ENVELOPE = 64 * 1024  # boundaries and part headers around an uploaded file
# A template's source fields (subject, bodies, follow-up subject and body) at their size limit, each character
# at its longest in JSON (a surrogate pair escaped as two \uXXXX: 12 bytes): a template the render limits
# accept is never refused for its body's size, so its answer is the 422 that names the field.
TEMPLATE_SOURCE_FIELDS = 5
JSON_BYTES_PER_CHAR = 12


def route_limits(settings: Settings) -> dict[tuple[str, str], int]:
    """Bodies larger than the default (`MAILDASH_API_BODY_MAX_BYTES`), by method and route path."""
    template = TEMPLATE_SOURCE_FIELDS * JSON_BYTES_PER_CHAR * settings.template_source_max_chars
    return {
        ("POST", "/templates"): max(template, settings.api_body_max_bytes),
        ("PATCH", "/templates/{template_id}"): max(template, settings.api_body_max_bytes),
        ("POST", "/leads/import"): settings.import_max_bytes + MULTIPART_ENVELOPE,
        ("PUT", "/leads/{lead_id}/report"): settings.report_max_bytes + MULTIPART_ENVELOPE,
        ("POST", "/campaigns"): settings.campaign_body_max_bytes,
        ("POST", "/campaigns/dry-run"): settings.campaign_body_max_bytes,
    }


def _too_large(limit: int) -> str:
    return f"the request body is larger than this endpoint takes ({limit:,} bytes)"


class BodyTooLarge(HTTPException):
    """Raised from `receive`, so that whatever was reading the body stops and the answer is 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large(limit))


@dataclass(frozen=True)
class _Limit:
    method: str
    path: re.Pattern[str]
    max_bytes: int


class Gate:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.limits = [
            _Limit(method, compile_path(PREFIX + path)[0], max_bytes)
            for (method, path), max_bytes in route_limits(settings).items()
        ]

    def _limit(self, method: str, path: str) -> int:
        for limit in self.limits:
            if limit.method == method and limit.path.match(path):
                return limit.max_bytes
        return self.settings.api_body_max_bytes

    def _refusal(self, authorization: str | None) -> ApiError | None:
        scheme, token = get_authorization_scheme_param(authorization)
        if scheme.lower() != "bearer" or not token:
            return ApiError(
                401,
                "unauthorized",
                "missing bearer token; get one at /api/v1/auth/token",
                {"WWW-Authenticate": "Bearer"},
            )
        try:
            decode_token(self.settings, token)
        except ApiError as error:
            return error
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(f"{PREFIX}/"):
            await self.app(scope, receive, send)
            return
        method, path, headers = scope["method"], scope["path"], Headers(scope=scope)
        refusal = None if (method, path) in PUBLIC else self._refusal(headers.get("authorization"))
        if refusal is not None:
            await error_response(refusal.status, refusal.code, refusal.message, refusal.headers)(
                scope, receive, send
            )
            return
        limit = self._limit(method, path)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await error_response(413, "payload_too_large", _too_large(limit))(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            # The routes' error handlers answer it; this is for a reader outside them.
            if started:
                raise
            await error_response(413, "payload_too_large", _too_large(limit))(scope, receive, send)
