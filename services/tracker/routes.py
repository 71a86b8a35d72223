"""Public tracking endpoints (SPEC §4): thin adapters over `Tracker`."""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# The smallest transparent 1×1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}
MAX_PARAM = 512


async def open_pixel(request: Request) -> Response:
    """Always the GIF with 200: a forged or malformed token looks like a valid one and records nothing."""
    message = request.query_params.get("m", "")[:MAX_PARAM]
    token = request.query_params.get("t", "")[:MAX_PARAM]
    if message and token:
        ip = request.client.host if request.client else None
        await request.app.state.tracker.record_open(message, token, request.headers.get("user-agent", ""), ip)
    return Response(PIXEL, media_type="image/gif", headers=PIXEL_HEADERS)


routes = [Route("/track/open.gif", open_pixel)]
