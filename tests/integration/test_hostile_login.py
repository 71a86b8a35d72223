"""Login under hostile use (issue 14): floods, parallel guessing, probing for accounts, made-up addresses, and
tokens that outlive their user's rights. Real api processes over HTTP, rows in PostgreSQL."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.api.accounts.service import EXPIRED_FAILURES_PER_ATTEMPT
from services.api.main import create_app as create_api
from shared.db import asyncpg_dsn
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.cli import maildash
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service, subprocess_service, with_ports

pytestmark = pytest.mark.integration

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
async def api_process(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A second api, in a process of its own: nothing the test does runs on its event loop."""
    log_dir = tmp_path_factory.mktemp("api-process")
    async with subprocess_service("api", with_ports(settings, "api"), log_dir) as service:
        yield service.url


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        yield connection
    finally:
        await connection.close()


async def new_user(api: ApiClient) -> str:
    """The e-mail address of the admin of a new workspace (password PASSWORD)."""
    email = f"user-{uuid.uuid4().hex[:8]}@agency.example"
    body = {"name": f"ws-{uuid.uuid4().hex[:8]}", "admin_email": email, "admin_password": PASSWORD}
    await api.create("/workspaces", body)
    return email


async def login(url: str, email: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        return await login_with(client, url, email, password)


async def login_with(client: httpx.AsyncClient, url: str, email: str, password: str) -> httpx.Response:
    return await client.post(f"{url}/api/v1/auth/token", data={"username": email, "password": password})


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


async def test_logins_in_parallel_leave_healthz_answering_within_100_ms(
    api: ApiClient, api_process: str
) -> None:
    # Four at a time per user: more logins of one address at once than the failure limit would be throttled.
    users = [await new_user(api) for _ in range(4)]
    latencies = []
    async with httpx.AsyncClient(timeout=60) as client, httpx.AsyncClient(base_url=api_process) as probe:
        await probe.get("/healthz")  # connected before the clock starts
        logins = asyncio.gather(
            *(login_with(client, api_process, email, PASSWORD) for email in users for _ in range(4))
        )
        while not logins.done():
            started = time.perf_counter()
            assert (await probe.get("/healthz")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    assert [reply.status_code for reply in await logins] == [200] * 16
    assert p99(latencies) < 0.1, f"healthz p99 {p99(latencies) * 1000:.0f} ms; {sorted(latencies)[-5:]}"
    assert len(latencies) >= 20  # enough for a p99 to mean something


async def test_a_login_flood_beyond_the_queue_is_refused_at_once(settings: Settings) -> None:
    small = settings.model_copy(update={"password_hash_workers": 1, "password_hash_queue": 2})
    async with (
        inprocess_service(create_api, small, free_port()) as url,
        httpx.AsyncClient(timeout=60) as client,
    ):
        replies = await asyncio.gather(
            *(login_with(client, url, "admin@example.com", "admin") for _ in range(20))
        )
    statuses = [reply.status_code for reply in replies]
    assert set(statuses) == {200, 429}, statuses
    assert statuses.count(429) >= 10, statuses  # at most 3 checked or waiting at a time, each ~0.15 s
    for reply in replies:
        if reply.status_code == 429:
            assert reply.json()["error_code"] == "too_many_requests"
            assert reply.headers["retry-after"] == "1"


@pytest.mark.parametrize("account", ["real", "unknown"])
async def test_parallel_wrong_passwords_get_five_checked_per_address_across_api_processes(
    api: ApiClient, api_url: str, api_process: str, db: asyncpg.Connection, account: str
) -> None:
    email = await new_user(api) if account == "real" else f"nobody-{uuid.uuid4().hex[:8]}@agency.example"
    replies = await asyncio.gather(
        *(login(url, email, "wrong password") for url in (api_url, api_process) for _ in range(15))
    )
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [401] * 5 + [429] * 25, statuses
    for reply in replies:
        if reply.status_code == 429:
            assert 0 < int(reply.headers["retry-after"]) <= 15 * 60
    assert await db.fetchval("SELECT count(*) FROM login_failures WHERE email = $1", email) == 5


async def test_an_unknown_address_takes_as_long_to_refuse_as_a_real_one(api: ApiClient, api_url: str) -> None:
    real = await new_user(api)

    async def seconds(email: str) -> float:
        started = time.perf_counter()
        assert (await login(api_url, email, "wrong password")).status_code == 401
        return time.perf_counter() - started

    real_times, unknown_times = [], []
    for _ in range(5):  # interleaved, so that load from elsewhere weighs on both alike
        real_times.append(await seconds(real))
        unknown_times.append(await seconds(f"nobody-{uuid.uuid4().hex[:8]}@agency.example"))
    ratio = statistics.median(unknown_times) / statistics.median(real_times)
    assert 0.5 < ratio < 2, (real_times, unknown_times)


async def test_expired_login_failures_are_deleted_a_batch_per_attempt(
    api_url: str, db: asyncpg.Connection
) -> None:
    run = uuid.uuid4().hex[:8]
    await db.execute(
        "INSERT INTO login_failures (email, at)"
        " SELECT 'made-up-' || $1 || '-' || i || '@x.example', now() - interval '16 minutes'"
        " FROM generate_series(1, $2::int) AS i",
        run,
        EXPIRED_FAILURES_PER_ATTEMPT * 5 // 2,
    )
    await db.execute("INSERT INTO login_failures (email, at) VALUES ($1, now() - interval '14 minutes')", run)

    async def expired() -> int:
        count: int = await db.fetchval(
            "SELECT count(*) FROM login_failures WHERE at <= now() - interval '15 minutes'"
        )
        return count

    before = await expired()
    assert (await login(api_url, f"nobody-{run}@x.example", "guess")).status_code == 401
    assert await expired() == before - EXPIRED_FAILURES_PER_ATTEMPT  # one attempt's work stays bounded
    for attempt in range(before // EXPIRED_FAILURES_PER_ATTEMPT):
        await login(api_url, f"nobody-{run}-{attempt}@x.example", "guess")
    assert await expired() == 0
    assert await db.fetchval("SELECT count(*) FROM login_failures WHERE email = $1", run) == 1


async def test_an_operator_deactivates_a_user_whose_token_stops_working_at_once(
    api: ApiClient, api_url: str
) -> None:
    email = await new_user(api)
    async with ApiClient(api_url) as user:
        await user.login(email, PASSWORD)
        assert (await user.http.get("/leads")).status_code == 200

        assert f"user {email} is deactivated" in await maildash(api_url, "user", "deactivate", email)
        for path in ("/auth/me", "/leads"):
            refused = await user.http.get(path)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error_code"] == "unauthorized"
        right_password = await login(api_url, email, PASSWORD)
        assert right_password.status_code == 403
        assert "deactivated" in right_password.json()["error"]
        assert (await login(api_url, email, "wrong password")).status_code == 401

        assert f"user {email} is active" in await maildash(api_url, "user", "activate", email)
        await user.login(email, PASSWORD)
        assert (await user.http.get("/leads")).status_code == 200


async def test_only_a_superuser_deactivates_users_and_never_themselves(api: ApiClient, api_url: str) -> None:
    email = await new_user(api)
    async with ApiClient(api_url) as user:
        await user.login(email, PASSWORD)
        forbidden = await user.http.post("/users/deactivate", json={"email": "admin@example.com"})
        assert forbidden.status_code == 403
        assert forbidden.json()["error_code"] == "forbidden"
    themselves = await api.http.post("/users/deactivate", json={"email": "admin@example.com"})
    assert themselves.status_code == 409
    unknown = await api.http.post("/users/deactivate", json={"email": "nobody@agency.example"})
    assert unknown.status_code == 404
    assert (await api.http.get("/auth/me")).status_code == 200


async def test_a_demoted_or_moved_user_loses_the_old_rights_at_once(
    api: ApiClient, api_url: str, db: asyncpg.Connection
) -> None:
    email = await new_user(api)
    await db.execute("UPDATE users SET is_superuser = true WHERE email = $1", email)
    async with ApiClient(api_url) as user:
        await user.login(email, PASSWORD)  # a token that says superuser
        workspace = {"name": f"ws-{uuid.uuid4().hex[:8]}", "admin_password": PASSWORD}
        elsewhere = await user.create("/workspaces", {**workspace, "admin_email": f"x-{email}"})
        lead = await user.lead(f"lead-{uuid.uuid4().hex[:8]}@lead.example")

        await db.execute("UPDATE users SET is_superuser = false WHERE email = $1", email)
        demoted = await user.http.post("/workspaces", json={**workspace, "admin_email": f"y-{email}"})
        assert demoted.status_code == 403
        assert (await user.http.get(f"/leads/{lead['id']}")).status_code == 200

        moved = uuid.UUID(elsewhere["workspace"]["id"])
        await db.execute("UPDATE users SET workspace_id = $1 WHERE email = $2", moved, email)
        stale = await user.http.get(f"/leads/{lead['id']}")
        assert stale.status_code == 401, stale.text
        await user.login(email, PASSWORD)
        assert (await user.get("/auth/me"))["workspace"]["id"] == str(moved)
        assert (await user.http.get(f"/leads/{lead['id']}")).status_code == 404
