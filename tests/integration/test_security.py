"""Security rules of SPEC §2.8 and §7 that need the running api."""

from __future__ import annotations

import uuid

import httpx
import pytest

from services.api.main import create_app as create_api
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.samples import production
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service

pytestmark = pytest.mark.integration

PRODUCTION = production()


def domain_body(host: str) -> dict[str, object]:
    name = f"sec-{uuid.uuid4().hex[:8]}.example"
    return {"domain": name, "from_email": f"a@{name}", "smtp": {"host": host, "port": 25}}


async def test_production_refuses_smtp_hosts_on_internal_addresses(settings: Settings) -> None:
    production = settings.model_copy(update=PRODUCTION)
    async with inprocess_service(create_api, production, free_port()) as url, ApiClient(url) as api:
        await api.login(PRODUCTION["admin_email"], PRODUCTION["admin_password"])
        for host in ("127.0.0.1", "localhost", "169.254.169.254", "10.0.0.8"):
            reply = await api.http.post("/domains", json=domain_body(host))
            assert reply.status_code == 422, (host, reply.text)
            assert reply.json()["fields"][0]["loc"] == ["body", "smtp", "host"]
        unresolvable = await api.http.post("/domains", json=domain_body("no-such-host.invalid"))
        assert unresolvable.status_code == 422
    allowed = production.model_copy(update={"smtp_allow_private": True})
    async with inprocess_service(create_api, allowed, free_port()) as url, ApiClient(url) as api:
        await api.login(PRODUCTION["admin_email"], PRODUCTION["admin_password"])
        assert (await api.http.post("/domains", json=domain_body("127.0.0.1"))).status_code == 201


async def test_development_allows_a_local_smtp_sink(api: ApiClient) -> None:
    assert (await api.http.post("/domains", json=domain_body("127.0.0.1"))).status_code == 201


async def test_five_failed_logins_within_15_minutes_answer_429(api_url: str, api: ApiClient) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=f"{api_url}/api/v1") as client:
        for _ in range(5):
            wrong = await client.post("/auth/token", data={"username": email, "password": "wrong-password"})
            assert wrong.status_code == 401
        throttled = await client.post("/auth/token", data={"username": email, "password": "wrong-password"})
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) > 0
        assert throttled.json()["error_code"] == "too_many_requests"
        # Another address is not affected.
        assert (
            await client.post("/auth/token", data={"username": "admin@example.com", "password": "admin"})
        ).status_code == 200
