"""Requests are counted under their route's template: a bounded set of labels whatever paths are asked."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from shared.observability import RequestMetrics, route_templates


async def hello(_: Request) -> Response:
    return PlainTextResponse("hello")


async def crash(_: Request) -> Response:
    raise RuntimeError("boom")


ROUTES = [
    Route("/leads/{lead_id}", hello),
    Route("/leads/import", hello, methods=["POST"]),
    Route("/crash", crash),
    Mount("/assets", StaticFiles(directory="/", check_dir=False)),
]


def requests(route: str, status: str, method: str = "GET") -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("maildash_http_requests_total", labels) or 0.0


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/leads/5f0c", "/leads/{lead_id}"),
        ("/leads/import", "/leads/import"),  # the literal route, though the template of ids matches it too
        ("/assets/css/site.css", "/assets/{path:path}"),
        ("/wp-login.php", "unmatched"),
        ("/leads/5f0c/extra", "unmatched"),
    ],
)
def test_a_path_is_named_by_the_template_of_its_route(path: str, template: str) -> None:
    metrics = RequestMetrics(Starlette(), lambda: route_templates(ROUTES))
    assert metrics.template(path) == template


async def test_answers_and_crashes_are_counted_and_timed_under_their_template() -> None:
    app = Starlette(routes=ROUTES)
    metrics = RequestMetrics(app, lambda: route_templates(ROUTES))
    answered = requests("/leads/{lead_id}", "200")
    crashed = requests("/crash", "500")
    timed = REGISTRY.get_sample_value(
        "maildash_http_request_duration_seconds_count", {"method": "GET", "route": "/leads/{lead_id}"}
    )
    transport = httpx.ASGITransport(app=metrics, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for lead in ("a", "b", "c"):
            assert (await client.get(f"/leads/{lead}")).status_code == 200
        assert (await client.get("/crash")).status_code == 500
        assert (await client.request("BREW", "/leads/a")).status_code == 405
    assert requests("/leads/{lead_id}", "200") == answered + 3
    assert requests("/crash", "500") == crashed + 1
    assert requests("/leads/{lead_id}", "405", method="other") == 1  # unknown methods share one label
    assert (
        REGISTRY.get_sample_value(
            "maildash_http_request_duration_seconds_count", {"method": "GET", "route": "/leads/{lead_id}"}
        )
        == (timed or 0) + 3
    )
