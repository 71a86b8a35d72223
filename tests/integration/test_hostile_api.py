"""Hostile input at the running api (issue 14): bodies and their sizes, numbers, dates and names that would
reach PostgreSQL or the planner. Every probe wants a 4xx in the envelope and no row written."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text

from services.api.main import create_app as create_api
from shared.db import create_engine, session_factory
from shared.settings import Settings
from tests.support.api import ALWAYS_OPEN, ApiClient
from tests.support.smtp import free_port
from tests.support.stack import inprocess_service

pytestmark = pytest.mark.integration

# Small limits, so that crossing each costs the test little; the defaults are in shared/settings.py.
LIMITS = {
    "api_body_max_bytes": 64 * 1024,
    "campaign_body_max_bytes": 256 * 1024,
    "report_max_bytes": 128 * 1024,
    "import_max_bytes": 512 * 1024,
    "import_max_rows": 5000,
    "start_horizon_days": 30,
}
MULTIPART_ENVELOPE = 64 * 1024  # what the api allows an upload beyond its file (services/api/kit/gate.py)
TABLES = (
    "workspaces",
    "users",
    "sending_domains",
    "leads",
    "lead_reports",
    "templates",
    "suppressions",
    "campaigns",
    "campaign_leads",
)
BOUNDARY = "hostile-boundary"


@pytest.fixture(scope="module")
async def api_url(settings: Settings) -> AsyncIterator[str]:
    async with inprocess_service(create_api, settings.model_copy(update=LIMITS), free_port()) as url:
        yield url


@pytest.fixture(scope="module")
async def rows(settings: Settings) -> AsyncIterator[Any]:
    """`await rows()`: the row count of every table a request could write to."""
    engine = create_engine(settings.database_url, pool_size=1)
    sessions = session_factory(engine)

    async def count() -> dict[str, int]:
        async with sessions() as session:
            query = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TABLES)  # noqa: S608
            return dict((await session.execute(text(query))).all())

    yield count
    await engine.dispose()


@pytest.fixture(scope="module")
async def world(api_url: str) -> dict[str, Any]:
    """A domain, a lead and a template of the admin's workspace, for the payloads that name them."""
    async with ApiClient(api_url) as api:
        await api.login()
        name = f"hostile-{uuid.uuid4().hex[:8]}.example"
        domain = await api.domain(name, 1025, interval=60)
        lead = await api.lead(f"{uuid.uuid4().hex[:10]}@lead.example", fields={"city": "Delft"})
        template = await api.template()
        return {
            "domain": domain,
            "lead": lead,
            "template": template,
            "token": api.http.headers["Authorization"],
        }


def wizard(world: dict[str, Any], **schedule: Any) -> dict[str, Any]:
    return {
        "name": "Hostile",
        "template_id": world["template"]["id"],
        "audience": {"mode": "static", "lead_ids": [world["lead"]["id"]]},
        "schedule": {"start_mode": "draft", "window": ALWAYS_OPEN, **schedule},
        "domains": [world["domain"]["domain"]],
    }


def refused(reply: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert reply.status_code == status, (reply.request.url, reply.text[:300])
    body: dict[str, Any] = reply.json()
    assert body["data"] is None, body
    assert body["error_code"], body
    assert body["error"], body
    return body


def multipart_head(field: str = "file", filename: str = "upload.csv") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


# ── talking HTTP/1.1 by hand: an answer that comes while the client is still sending ───────────────────
async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = dict(line.decode().lower().split(": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    body = await reader.readexactly(int(headers["content-length"]))
    return status, json.loads(body)


async def answer_before_the_body_ends(
    url: str,
    method: str,
    path: str,
    headers: dict[str, str],
    sent: bytes = b"",
    declared: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """Send the head and `sent` of a body that never ends (chunked, or `declared` bytes long) and return the
    answer that comes meanwhile; AssertionError when none comes within 5 s."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    framing = {"Transfer-Encoding": "chunked"} if declared is None else {"Content-Length": str(declared)}
    head = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
    head += [f"{name}: {value}" for name, value in {**headers, **framing}.items()]

    async def send() -> None:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        for start in range(0, len(sent), 16 * 1024):
            piece = sent[start : start + 16 * 1024]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if declared is None else piece)
            await writer.drain()
        await asyncio.sleep(30)  # and never the rest

    sending = asyncio.create_task(send())
    try:
        return await asyncio.wait_for(_read_answer(reader), timeout=5)
    except TimeoutError as error:
        raise AssertionError(f"{method} {path}: no answer while the body was still coming") from error
    finally:
        sending.cancel()
        writer.close()


def _routes(world: dict[str, Any]) -> list[tuple[str, str, str, int, bytes]]:
    """(method, path, content type, limit, the start of a body) of routes with each kind of limit."""
    lead = world["lead"]["id"]
    multipart = f"multipart/form-data; boundary={BOUNDARY}"
    return [
        ("POST", "/api/v1/leads", "application/json", LIMITS["api_body_max_bytes"], b'{"email": "'),
        ("POST", "/api/v1/campaigns", "application/json", LIMITS["campaign_body_max_bytes"], b'{"name": "'),
        (
            "PUT",
            f"/api/v1/leads/{lead}/report",
            multipart,
            LIMITS["report_max_bytes"] + MULTIPART_ENVELOPE,
            multipart_head(filename="r.pdf") + b"%PDF-1.4\n",
        ),
        (
            "POST",
            "/api/v1/leads/import",
            multipart,
            LIMITS["import_max_bytes"] + MULTIPART_ENVELOPE,
            multipart_head() + b"email,note\n",
        ),
    ]


def filler(start: bytes, size: int) -> bytes:
    """`size` bytes that stay a plausible body of its kind all the way (CSV rows, or one long string)."""
    # Long rows for the CSV, so that its bytes run out before MAILDASH_IMPORT_MAX_ROWS does.
    row = b"someone@lead.example," + b"n" * 200 + b"\n" if start.endswith(b"note\n") else b"a" * 64
    return (start + row * (size // len(row) + 1))[:size]


# ── bodies and their sizes ─────────────────────────────────────────────────────────────────────────────
async def test_a_body_is_refused_as_soon_as_it_crosses_its_routes_limit(
    api_url: str, world: dict[str, Any], rows: Any
) -> None:
    before = await rows()
    for method, path, content_type, limit, start in _routes(world):
        headers = {"Authorization": world["token"], "Content-Type": content_type}
        status, body = await answer_before_the_body_ends(
            api_url, method, path, headers, sent=filler(start, limit + 32 * 1024)
        )
        assert (status, body["error_code"], body["data"]) == (413, "payload_too_large", None), (path, body)
        assert f"{limit:,}" in body["error"]
    assert await rows() == before


async def test_a_declared_length_over_the_limit_is_refused_before_any_byte_of_the_body(
    api_url: str, world: dict[str, Any], rows: Any
) -> None:
    before = await rows()
    pause = f"/api/v1/campaigns/{uuid.uuid4()}/pause"  # a route that reads no body has the limit too
    no_body = ("POST", pause, "application/json", LIMITS["api_body_max_bytes"], b"")
    for method, path, content_type, limit, _ in [*_routes(world), no_body]:
        headers = {"Authorization": world["token"], "Content-Type": content_type}
        status, body = await answer_before_the_body_ends(api_url, method, path, headers, declared=limit + 1)
        assert (status, body["error_code"]) == (413, "payload_too_large"), (path, body)
    # The login form is public, and bounded all the same.
    status, body = await answer_before_the_body_ends(
        api_url,
        "POST",
        "/api/v1/auth/token",
        {"Content-Type": "application/x-www-form-urlencoded"},
        declared=40_000_000,
    )
    assert (status, body["error_code"]) == (413, "payload_too_large")
    assert await rows() == before


async def test_without_a_valid_token_no_byte_of_the_body_is_read(
    api_url: str, world: dict[str, Any], settings: Settings, rows: Any
) -> None:
    before = await rows()
    now = datetime.now(UTC)
    claims = {
        "sub": str(uuid.uuid4()),
        "wid": str(uuid.uuid4()),
        "email": "x@y.example",
        "su": True,
        "aud": settings.jwt_audience,
        "iat": now - timedelta(hours=2),
    }
    expired = jwt.encode({**claims, "exp": now - timedelta(hours=1)}, settings.jwt_secret, "HS256")
    forged = jwt.encode(
        {**claims, "exp": now + timedelta(hours=1)}, "another-secret-of-32-bytes-or-more", "HS256"
    )
    for authorization in (
        None,
        "Bearer",
        "Bearer not-a-jwt",
        f"Bearer {expired}",
        f"Bearer {forged}",
        f"Basic {world['token'].split()[1]}",
    ):
        headers = {"Authorization": authorization} if authorization else {}
        superuser_only = ("POST", "/api/v1/workspaces", "application/json", 0, b"")
        for method, path, content_type, _, _ in [*_routes(world), superuser_only]:
            for declared in (1000, 40_000_000):  # under and over the route's limit: the token comes first
                status, body = await answer_before_the_body_ends(
                    api_url, method, path, {**headers, "Content-Type": content_type}, declared=declared
                )
                assert (status, body["error_code"]) == (401, "unauthorized"), (authorization, path, body)
    assert await rows() == before


# ── every input bounded ────────────────────────────────────────────────────────────────────────────────
BOUNDED_FORMATS = {"date-time", "date", "binary"}  # a time or date parses to a fixed size; a file: its route


def _unbounded(schema: dict[str, Any], components: dict[str, Any], where: str, seen: set[str]) -> list[str]:
    """Where `schema` lets a client send a string, number, list or map of unbounded size."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return [] if name in seen else _unbounded(components[name], components, where, seen | {name})
    found = []
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            found += _unbounded(option, components, where, seen)
    kind = schema.get("type")
    if kind == "string" and not (
        "maxLength" in schema
        or "enum" in schema
        or "const" in schema
        or schema.get("format") in BOUNDED_FORMATS
        or "contentMediaType" in schema
    ):
        found.append(f"{where}: a string without maxLength")
    if kind == "integer" and not ("maximum" in schema or "exclusiveMaximum" in schema):
        found.append(f"{where}: an integer without maximum")
    if kind == "array":
        if "maxItems" not in schema:
            found.append(f"{where}: a list without maxItems")
        found += _unbounded(schema.get("items", {}), components, f"{where}[]", seen)
    if kind == "object" or "properties" in schema:
        for name, item in schema.get("properties", {}).items():
            found += _unbounded(item, components, f"{where}.{name}", seen)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                found.append(f"{where}: a map without maxProperties")
            found += _unbounded(
                schema.get("propertyNames", {"type": "string"}), components, f"{where}{{key}}", seen
            )
            found += _unbounded(extra, components, f"{where}{{}}", seen)
    return found


async def test_every_input_the_api_documents_is_bounded(api_url: str) -> None:
    """Every query parameter and every field of every request body, as the OpenAPI document describes them
    (path ids are left out: any id answers 404, and the request line's length is bounded by the server)."""
    async with httpx.AsyncClient() as client:
        document = (await client.get(f"{api_url}/openapi.json")).json()
    components = document["components"]["schemas"]
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    where = f"{method.upper()} {path} ?{parameter['name']}"
                    found += _unbounded(parameter["schema"], components, where, set())
            for media in operation.get("requestBody", {}).get("content", {}).values():
                found += _unbounded(media["schema"], components, f"{method.upper()} {path} body", set())
    assert found == []


async def test_long_strings_are_refused_at_once_and_write_nothing(
    api: ApiClient, world: dict[str, Any], rows: Any
) -> None:
    before = await rows()
    long_address = f"{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 63}.{'e' * 60}.example"  # 327 characters
    started = time.perf_counter()
    for path, body in [
        ("/leads", {"email": long_address}),
        ("/leads", {"email": "a" * 60_000 + "@x.example"}),
        ("/leads", {"email": "tag@lead.example", "tags": ["t" * 101]}),
        ("/leads", {"email": "key@lead.example", "fields": {"k" * 101: 1}}),
        ("/leads", {"email": "value@lead.example", "fields": {"k": "v" * 5001}}),
        ("/leads", {"email": "nested@lead.example", "fields": {"k": [[[[1]]]]}}),
        ("/suppressions", {"domain": "d" * 254}),
        ("/workspaces", {"name": "w", "admin_email": long_address, "admin_password": "long enough"}),
        ("/campaigns/dry-run", {**wizard(world), "template_id": "t" * 101}),
        ("/campaigns/dry-run", {**wizard(world), "domains": ["d" * 254]}),
        ("/campaigns", {**wizard(world), "audience": {"mode": "static", "lead_ids": ["i" * 101]}}),
        ("/campaigns", {**wizard(world), "audience": {"mode": "tags", "tags": ["t" * 101]}}),
    ]:
        refused(await api.http.post(path, json=body))
    refused(await api.http.patch(f"/leads/{world['lead']['id']}", json={"tags": ["t" * 101]}))
    refused(await api.http.get("/campaigns/messages", params={"campaign_id": "c" * 101}))
    assert time.perf_counter() - started < 5
    assert await rows() == before
    assert (await api.get(f"/leads/{world['lead']['id']}"))["tags"] == []


# ── numbers, dates and names that reach the layers below ───────────────────────────────────────────────
async def test_numbers_beyond_their_columns_are_refused_and_write_nothing(
    api: ApiClient, world: dict[str, Any], rows: Any
) -> None:
    before = await rows()
    lead, domain = world["lead"], world["domain"]
    raw = {"Content-Type": "application/json"}
    for number in ("NaN", "Infinity", "-Infinity", "1e400"):
        body = f'{{"email": "nan@lead.example", "fields": {{"score": {number}}}}}'
        refused(await api.http.post("/leads", content=body, headers=raw))
        refused(
            await api.http.patch(
                f"/leads/{lead['id']}", content=f'{{"fields": {{"score": {number}}}}}', headers=raw
            )
        )
    smtp = {"host": "127.0.0.1", "port": 1025, "security": "none"}
    new_domain = {"domain": f"n-{uuid.uuid4().hex[:6]}.example", "from_email": "a@n.example", "smtp": smtp}
    for change in (
        {"daily_cap": 2**31},
        {"daily_cap": 2**63},
        {"daily_cap": 0},
        {"min_interval_seconds": 2**63},
        {"smtp": {**smtp, "port": 2**70}},
    ):
        refused(await api.http.post("/domains", json={**new_domain, **change}))
        refused(await api.http.patch(f"/domains/{domain['id']}", json=change))
    for change in (
        {"followup": {"enabled": True, "days": 2**31}},
        {"audience": {"mode": "tags", "tags": ["x"], "exclude_recent_days": 2**63}},
        {"schedule": {"start_mode": "draft", "window": {**ALWAYS_OPEN, "days": [2**63]}}},
    ):
        for path in ("/campaigns", "/campaigns/dry-run"):
            refused(await api.http.post(path, json={**wizard(world), **change}))
    for query in ({"page": 2**63}, {"page_size": 2**31}, {"page": -(2**63)}):
        refused(await api.http.get("/leads", params=query))
    assert await rows() == before
    assert (await api.get(f"/leads/{lead['id']}"))["fields"] == lead["fields"]
    assert (await api.get(f"/domains/{domain['id']}"))["daily_cap"] == domain["daily_cap"]


async def test_dates_beyond_the_planning_horizon_or_the_calendar_are_refused(
    api: ApiClient, world: dict[str, Any], rows: Any
) -> None:
    before = await rows()
    beyond = datetime.now(UTC) + timedelta(days=LIMITS["start_horizon_days"] + 2)
    for start_mode, start_at in [
        ("at", "9999-12-31T23:59:59+00:00"),
        ("at", beyond.isoformat()),
        ("now", "9999-01-01T00:00:00+00:00"),
        ("draft", beyond.isoformat()),
        ("at", "9999-12-31T23:59:59-23:59"),
        ("at", "0001-01-01T00:00:00+23:59"),
    ]:
        for path in ("/campaigns", "/campaigns/dry-run"):
            body = refused(
                await api.http.post(path, json=wizard(world, start_mode=start_mode, start_at=start_at))
            )
            assert "start_at" in json.dumps(body["fields"]), body
    for query in ({"created_to": "9999-12-31T23:59:59-23:59"}, {"created_from": "0001-01-01T00:00:00+23:59"}):
        refused(await api.http.get("/campaigns", params=query))
    assert await rows() == before
    # Within the horizon all is well.
    within = (datetime.now(UTC) + timedelta(days=LIMITS["start_horizon_days"] - 2)).isoformat()
    planned = await api.http.post("/campaigns/dry-run", json=wizard(world, start_mode="at", start_at=within))
    assert planned.status_code == 200, planned.text


async def test_names_that_would_reach_the_holidays_package_or_the_tz_database_are_refused(
    api: ApiClient, world: dict[str, Any], rows: Any
) -> None:
    before = await rows()
    windows = [
        {"holidays": name}
        for name in ("__class__", "country_holidays", "HolidayBase", "Netherlands", "__spec__", "nl")
    ]
    windows += [
        {"timezone": name}
        for name in ("../../../../etc/passwd", "/etc/localtime", "Europe/../UTC", "x" * 65, "Europe/Nowhere")
    ]
    for window in windows:
        for path in ("/campaigns", "/campaigns/dry-run"):
            body = refused(await api.http.post(path, json=wizard(world, window={**ALWAYS_OPEN, **window})))
            assert "window" in json.dumps(body["fields"]), body
    assert await rows() == before
    for window in ({"holidays": "NLD"}, {"holidays": "US", "timezone": "America/New_York"}):
        planned = await api.http.post(
            "/campaigns/dry-run", json=wizard(world, window={**ALWAYS_OPEN, **window})
        )
        assert planned.status_code == 200, planned.text


async def test_the_planner_skips_a_fine_grid_under_a_small_daily_cap_and_refuses_what_never_fits(
    api: ApiClient, world: dict[str, Any], api_url: str
) -> None:
    tag = f"cap-{uuid.uuid4().hex[:6]}"
    csv = "email,tags\n" + "".join(f"{tag}-{i}@cap.example,{tag}\n" for i in range(3700))
    imported = await api.http.post("/leads/import", files={"file": ("cap.csv", csv.encode(), "text/csv")})
    assert imported.json()["data"]["created"] == 3700, imported.text
    # One second apart around the clock, but one a day: each day needs the first point of its grid only.
    fine = await api.domain(f"fine-{uuid.uuid4().hex[:6]}.example", 1025, interval=1, daily_cap=1)
    body = {**wizard(world), "domains": [fine["domain"]]}
    leads = [lead["id"] for lead in (await api.get(f"/leads?tag={tag}&page_size=40"))["items"]]
    started = time.perf_counter()
    planned = await api.http.post(
        "/campaigns/dry-run", json={**body, "audience": {"mode": "static", "lead_ids": leads}}
    )
    elapsed = time.perf_counter() - started
    assert planned.status_code == 200, planned.text
    assert len(planned.json()["data"]["per_day"]) == 40
    assert elapsed < 2, f"a dry-run of 40 leads took {elapsed:.1f} s"
    # 3,700 days of mail: beyond the planner's ten years, a clear 422 (and soon).
    started = time.perf_counter()
    everyone = {**body, "audience": {"mode": "tags", "tags": [tag]}}
    body = refused(await api.http.post("/campaigns/dry-run", json=everyone))
    assert "does not fit" in body["error"]
    assert time.perf_counter() - started < 10
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{api_url}/healthz")).status_code == 200


# ── the CSV import streams ─────────────────────────────────────────────────────────────────────────────
async def test_a_csv_import_is_read_as_it_arrives_and_refused_whole_beyond_its_limits_or_of_another_type(
    api: ApiClient, api_url: str, world: dict[str, Any], rows: Any
) -> None:
    before = await rows()
    headers = {"Authorization": world["token"], "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    # A byte that is not UTF-8 after a few good rows: refused before the rest of the upload arrives.
    start = multipart_head() + b"email\n" + b"good@lead.example\n" * 100 + b"\xff@bad.example\n"
    status, body = await answer_before_the_body_ends(
        api_url, "POST", "/api/v1/leads/import", headers, sent=start + b"x@lead.example\n" * 1000
    )
    assert (status, body["error_code"]) == (422, "validation_error"), body
    assert "UTF-8" in body["error"]
    # One row more than MAILDASH_IMPORT_MAX_ROWS: 413, and nothing imported.
    many = "email\n" + "".join(f"row{i}-{uuid.uuid4().hex[:6]}@many.example\n" for i in range(5001))
    reply = await api.http.post("/leads/import", files={"file": ("many.csv", many.encode(), "text/csv")})
    assert "5,000 rows" in refused(reply, 413)["error"]
    # Anything but a multipart upload with a `file` part is refused, never a crash; other routes likewise
    # refuse a body of a type they do not take.
    csv = b"email\nct@lead.example\n"
    cut = (f"multipart/form-data; boundary={BOUNDARY}", multipart_head() + csv)  # the body ends in the file
    other_part = (
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart_head("other") + csv + f"\r\n--{BOUNDARY}--\r\n".encode(),
    )
    wrong = [
        ("text/csv", csv),
        ("application/json", b'{"file": "email"}'),
        ("multipart/form-data", csv),
        ("multipart/form-data; boundary=x", csv),
        ("application/x-www-form-urlencoded", b"file=x"),
    ]
    for method, path, bodies in [
        ("POST", "/leads/import", [*wrong, cut, other_part]),
        ("PUT", f"/leads/{world['lead']['id']}/report", [*wrong, cut, other_part]),
        ("POST", "/leads", wrong),
        ("POST", "/auth/token", [*wrong[:4], cut]),
    ]:
        for content_type, content in bodies:
            reply = await api.http.request(
                method, path, content=content, headers={"Content-Type": content_type}
            )
            assert 400 <= reply.status_code < 500, (path, content_type, reply.text)
            refused(reply, reply.status_code)
    assert await rows() == before


# ── nasty and random JSON at every field ───────────────────────────────────────────────────────────────
NASTY = [2**31, 2**63, 10**30, float("nan"), float("inf"), "\x00", "\ud800", "a" * 300, "__class__",
         "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+23:59", [[[[[]]]]]]  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = (), leaves: bool = False) -> list[tuple[Any, ...]]:
    """Where a value can be replaced in `value`: every field and list item, or only those that hold no
    others (`leaves`)."""
    inner: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        inner = list(value.items())
    elif isinstance(value, list):
        inner = list(enumerate(value))
    found = [prefix] if prefix and not (leaves and inner) else []
    for key, item in inner:
        found += _paths(item, (*prefix, key), leaves)
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


class _Probe:
    """Sends a valid body with one field replaced and checks the answer; counts the rows a 201 wrote."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.created: Counter[str] = Counter()
        self.answers: Counter[int] = Counter()
        self._at_once = asyncio.Semaphore(8)

    async def __call__(
        self, target: tuple[str, str, dict[str, Any], str | None], where: Any, value: Any
    ) -> None:
        method, path, body, table = target
        sent = _replaced(body, where, value)
        if isinstance(sent.get("email"), str) and method == "POST":  # a fresh address, not a 409 every time
            sent["email"] = f"{uuid.uuid4().hex[:8]}{sent['email']}"
        content = json.dumps(sent)  # NaN and Infinity as the literals Python's JSON allows
        async with self._at_once:
            reply = await self.client.request(
                method, path, content=content, headers={"Content-Type": "application/json"}
            )
        self.answers[reply.status_code] += 1
        assert reply.status_code < 500, (method, path, content[:300], reply.text[:300])
        if reply.status_code >= 400:
            assert reply.json()["data"] is None, reply.text
            assert reply.json()["error_code"], reply.text
        elif reply.status_code == 201 and table:
            self.created[table] += 1


async def test_nasty_or_random_json_at_any_field_never_gets_a_server_error_nor_half_a_write(
    api_url: str, world: dict[str, Any], rows: Any
) -> None:
    lead, domain = world["lead"], world["domain"]
    smtp = {"host": "127.0.0.1", "port": 1025, "security": "none", "username": "u", "password": "p"}
    new_lead = {"email": "r@lead.example", "first_name": "R", "last_name": "S", "company": "C", "tags": ["a"],
                "fields": {"city": "Delft", "n": 1}}  # fmt: skip
    new_domain = {"domain": "r.example", "from_email": "a@r.example", "from_name": "R", "smtp": smtp,
                  "min_interval_seconds": 60, "daily_cap": 10, "active": True}  # fmt: skip
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    window = {**ALWAYS_OPEN, "days": [2], "timezone": "Europe/Amsterdam"}
    campaign = {**wizard(world, window=window, start_at=soon), "followup": {"enabled": True, "days": 3}}
    targets: list[tuple[str, str, dict[str, Any], str | None]] = [
        ("POST", "/leads", new_lead, "leads"),
        ("PATCH", f"/leads/{lead['id']}", {"first_name": "P", "tags": ["b"], "fields": {"n": 2}}, None),
        ("POST", "/domains", new_domain, "sending_domains"),
        ("PATCH", f"/domains/{domain['id']}", {"daily_cap": 5, "smtp": {"port": 1025}}, None),
        ("POST", "/suppressions", {"email": "s@lead.example", "reason": "manual"}, "suppressions"),
        ("POST", "/campaigns/dry-run", campaign, None),
        ("POST", "/campaigns", campaign, "campaigns"),
    ]
    before = await rows()

    @hypothesis_settings(
        max_examples=100,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],  # no shrinking: the failing request is in the message as it was sent
    )
    @given(data=st.data())
    def random_values(data: st.DataObject) -> None:  # runs in a thread; the requests go on this loop
        target = data.draw(st.sampled_from(targets))
        where, value = data.draw(st.sampled_from(_paths(target[2]))), data.draw(json_values)
        asyncio.run_coroutine_threadsafe(probe(target, where, value), loop).result()

    loop = asyncio.get_running_loop()
    headers = {"Authorization": world["token"]}
    async with httpx.AsyncClient(base_url=f"{api_url}/api/v1", headers=headers, timeout=30) as client:
        probe = _Probe(client)
        await asyncio.gather(
            *(
                probe(t, where, value)
                for t in targets
                for where in _paths(t[2], leaves=True)
                for value in NASTY
            )
        )
        await asyncio.to_thread(random_values)
    after = await rows()
    written = {t: after[t] - before[t] for t in TABLES if t != "campaign_leads"}  # a campaign's audience
    assert written == {t: probe.created[t] for t in written}, probe.answers
    assert probe.answers[422] > 0
    assert probe.answers[200] + probe.answers[201] > 0
