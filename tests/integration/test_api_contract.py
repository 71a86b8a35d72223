"""The api's envelope, auth guards and refusals, over real HTTP against PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text

from shared.db import create_engine
from shared.settings import Settings
from tests.support.api import ApiClient

pytestmark = pytest.mark.integration


def forge(settings: Settings, **claims: object) -> str:
    base = {"sub": str(uuid.uuid4()), "wid": str(uuid.uuid4()), "email": "x@example.com", "su": True}
    base |= {
        "aud": settings.jwt_audience,
        "iat": datetime.now(UTC),
        "exp": datetime.now(UTC) + timedelta(hours=1),
    }
    return jwt.encode(base | claims, settings.jwt_secret, algorithm="HS256")


async def test_every_resource_requires_a_valid_bearer_token(api_url: str, settings: Settings) -> None:
    expired = forge(settings, exp=datetime.now(UTC) - timedelta(minutes=1))
    wrong_audience = forge(settings, aud="someone-else")
    unsigned = jwt.encode(
        {"sub": str(uuid.uuid4()), "aud": settings.jwt_audience}, key=None, algorithm="none"
    )
    wrong_key = jwt.encode(
        {"sub": "x", "aud": settings.jwt_audience, "exp": 9999999999}, "k" * 40, algorithm="HS256"
    )
    async with httpx.AsyncClient(base_url=f"{api_url}/api/v1") as client:
        for headers in (
            {},
            {"Authorization": "Bearer garbage"},
            {"Authorization": f"Bearer {expired}"},
            {"Authorization": f"Bearer {wrong_audience}"},
            {"Authorization": f"Bearer {unsigned}"},
            {"Authorization": f"Bearer {wrong_key}"},
            {"Authorization": f"Bearer {forge(settings)}"},  # well signed, but no such user
        ):
            for path in ("/auth/me", "/campaigns", "/domains", "/leads", "/templates"):
                reply = await client.get(path, headers=headers)
                assert reply.status_code == 401, (path, headers, reply.text)
                assert reply.json()["error_code"] == "unauthorized"
                assert reply.headers["www-authenticate"] == "Bearer"


async def test_every_operation_of_the_openapi_document_but_login_needs_a_token(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        document = (await client.get("/openapi.json")).json()
        operations = [
            (method, path.replace("{", "").replace("}", "").split("/"))
            for path, item in document["paths"].items()
            for method in item
            if path != "/api/v1/auth/token"
        ]
        assert len(operations) >= 30
        for method, parts in operations:
            path = "/".join(str(uuid.uuid4()) if part.endswith("_id") else part for part in parts)
            reply = await client.request(method.upper(), path, json={})
            assert reply.status_code == 401, (method, path, reply.text)


async def test_a_campaign_takes_exactly_the_lifecycle_calls_a_user_may_ask_for(api_url: str) -> None:
    """`first_send`, `complete` and `reopen` are campaign transitions its messages cause: no routes."""
    async with httpx.AsyncClient(base_url=api_url) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    calls = {path.rsplit("/", 1)[1] for path in paths if path.startswith("/api/v1/campaigns/{campaign_id}/")}
    assert calls == {"start", "pause", "resume", "stop", "dry-run", "steps"}  # `steps`: an edit (PUT)


async def test_login_with_a_wrong_password_is_refused(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=f"{api_url}/api/v1") as client:
        reply = await client.post("/auth/token", data={"username": "admin@example.com", "password": "nope"})
    assert reply.status_code == 401
    assert reply.json() == {
        "data": None,
        "error": "wrong e-mail or password",
        "error_code": "invalid_credentials",
    }


async def test_me_names_user_and_workspace(api: ApiClient) -> None:
    me = await api.get("/auth/me")
    assert me["user"]["email"] == "admin@example.com"
    assert me["workspace"]["name"] == "default"


@pytest.mark.parametrize("raw_id", ["does-not-exist", "4f9c2d7e-8a51-4b0e-9f36-2c1d5e7a9b80", "1", "%20"])
async def test_unknown_ids_of_any_shape_answer_404_in_the_envelope(api: ApiClient, raw_id: str) -> None:
    for resource in ("campaigns", "domains", "leads", "templates"):
        reply = await api.http.get(f"/{resource}/{raw_id}")
        assert reply.status_code == 404, reply.text
        assert reply.json()["data"] is None
        assert reply.json()["error_code"] == "not_found"


async def test_unknown_paths_and_methods_answer_in_the_envelope(api: ApiClient) -> None:
    missing = await api.http.get("/nothing-here")
    assert (missing.status_code, missing.json()["error_code"]) == (404, "not_found")
    wrong_method = await api.http.delete("/campaigns")
    assert (wrong_method.status_code, wrong_method.json()["error_code"]) == (405, "method_not_allowed")


async def test_malformed_bodies_answer_422_with_fields(api: ApiClient) -> None:
    reply = await api.http.post("/leads", json={"email": "not-an-address", "surprise": 1})
    assert reply.status_code == 422
    body = reply.json()
    assert body["error_code"] == "validation_error"
    assert {tuple(f["loc"]) for f in body["fields"]} >= {("body", "email"), ("body", "surprise")}
    broken_json = await api.http.post("/leads", content=b"{", headers={"Content-Type": "application/json"})
    assert broken_json.status_code == 422


async def test_invalid_jinja_is_refused_when_saving_a_template(api: ApiClient) -> None:
    reply = await api.http.post(
        "/templates", json={"name": "x", "subject": "Hi {{ name", "body_html": "<p>x</p>"}
    )
    assert reply.status_code == 422
    assert "subject" in reply.json()["error"]


REMOVED = object()  # a key the case leaves out of the accepted body


def changed(body: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A deep copy of `body` with one key (dotted `path`) set to `value`, or left out for REMOVED."""
    copy = json.loads(json.dumps(body))
    *parents, key = path.split(".")
    node = copy
    for parent in parents:
        node = node[parent]
    if value is REMOVED:
        del node[key]
    else:
        node[key] = value
    return copy


async def test_each_wizard_rule_refuses_its_own_field_and_a_refused_campaign_writes_nothing(
    api: ApiClient,
) -> None:
    template = await api.template()
    lead = await api.lead(f"{uuid.uuid4().hex[:8]}@refused.example")
    domain = (await api.domain(f"refused-{uuid.uuid4().hex[:6]}.example", 1025))["domain"]
    accepted = {
        "name": "Refused",
        "template_id": template["id"],
        "audience": {"mode": "static", "lead_ids": [lead["id"]]},
        "schedule": {
            "start_mode": "at",
            "start_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
            "window": {"start": "08:00", "end": "17:00", "holidays": "NL"},
        },
        "domains": [domain],
        "followup": {"enabled": True, "days": 3},
    }
    dry_run = await api.http.post("/campaigns/dry-run", json=accepted)
    assert dry_run.status_code == 200, dry_run.text  # every refusal below changes one thing of this body
    unknown = str(uuid.uuid4())
    cases = [  # what changes, to what; where the 422 must point (under "body"), and what it must say there
        ("template_id", unknown, "template_id", "template not found"),
        ("domains", ["unregistered.example"], "domains", "unregistered.example"),
        ("audience.lead_ids", [lead["id"], unknown, "junk"], "audience.lead_ids", f"ids: {unknown}, junk"),
        ("schedule.start_at", "2020-01-01T08:00:00+00:00", "schedule.start_at", "in the past"),
        ("schedule.start_at", REMOVED, "schedule", "start_at is required"),
        ("schedule.window.end", "07:00", "schedule.window", "start must be before its end"),
        ("schedule.window.holidays", "XX", "schedule.window.holidays", "unknown holiday calendar 'XX'"),
        ("followup.days", 31, "followup.days", "less than or equal to 30"),
    ]
    before = (await api.get("/campaigns?page_size=1"))["total"]
    for path, value, field, says in cases:
        body = changed(accepted, path, value)
        for endpoint in ("/campaigns/dry-run", "/campaigns"):
            reply = await api.http.post(endpoint, json=body)
            assert reply.status_code == 422, (endpoint, path, reply.text)
            refusal = reply.json()
            assert refusal["data"] is None
            assert [f["loc"] for f in refusal["fields"]] == [["body", *field.split(".")]], (endpoint, refusal)
            assert says in refusal["fields"][0]["msg"], (endpoint, refusal)
    assert (await api.get("/campaigns?page_size=1"))["total"] == before
    await api.create("/campaigns", accepted)  # and unchanged, the body is accepted by create too
    assert (await api.get("/campaigns?page_size=1"))["total"] == before + 1


async def test_lists_page_and_refuse_bad_page_sizes(api: ApiClient) -> None:
    for i in range(3):
        await api.lead(f"page-{i}-{uuid.uuid4().hex[:6]}@paging.example")
    page = await api.get("/leads?page=1&page_size=2")
    assert len(page["items"]) == 2
    assert page["total"] >= 3
    beyond = await api.get("/leads?page=100000&page_size=2")
    assert beyond["items"] == []
    for size in (0, 201):
        assert (await api.http.get(f"/leads?page_size={size}")).status_code == 422


async def test_domain_password_is_stored_encrypted_and_never_returned(api: ApiClient) -> None:
    domain = await api.create(
        "/domains",
        {
            "domain": f"secret-{uuid.uuid4().hex[:6]}.example",
            "from_email": "a@secret.example",
            "smtp": {"host": "smtp.example", "port": 587, "username": "u", "password": "hunter2-very-secret"},
        },
    )
    assert domain["smtp"]["has_password"] is True
    assert "hunter2" not in (await api.http.get(f"/domains/{domain['id']}")).text
    assert domain["min_interval_seconds"] == 1200  # the SPEC default


async def test_health_readiness_and_metrics(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = (await client.get("/readyz")).json()
        assert ready["ready"] is True
        assert ready["checks"]["database"] is True
        metrics = await client.get("/metrics")
        assert "python_info" in metrics.text


async def test_window_fields_left_out_come_from_the_configured_defaults(settings: Settings) -> None:
    from services.api.main import create_app as create_api
    from tests.support.smtp import free_port
    from tests.support.stack import inprocess_service

    configured = settings.model_copy(update={"window_end": "18:30", "window_days": [0, 1, 2]})
    async with inprocess_service(create_api, configured, free_port()) as url, ApiClient(url) as api:
        await api.login()
        await api.domain(f"win-{uuid.uuid4().hex[:6]}.example", 1025)
        domain = (await api.get("/domains?page_size=1"))["items"][0]["domain"]
        lead = await api.lead(f"{uuid.uuid4().hex[:8]}@win.example")
        template = await api.template()
        body = {"start_mode": "draft", "window": {"timezone": "UTC"}}
        campaign = await api.campaign(template["id"], [lead["id"]], [domain], schedule=body)
    assert campaign["window"] == {
        "timezone": "UTC", "days": [0, 1, 2], "start": "08:00", "end": "18:30", "holidays": "NL"
    }  # fmt: skip


async def test_lists_filter_as_documented(api: ApiClient) -> None:
    marker = uuid.uuid4().hex[:8]
    tagged = await api.lead(f"{marker}-a@filter.example", company=f"Acme {marker}", tags=["vip", marker])
    await api.lead(f"{marker}-b@filter.example", tags=["other"])
    by_tag = await api.get(f"/leads?tag={marker}")
    assert [lead["id"] for lead in by_tag["items"]] == [tagged["id"]]
    assert (await api.get(f"/leads?search=ACME%20{marker}"))["total"] == 1
    assert (await api.get(f"/leads?search={marker}&status=active"))["total"] == 2
    assert (await api.get(f"/leads?search={marker}&status=bounced"))["total"] == 0
    # `%` and `_` are literal characters to look for, not wildcards handed to the database.
    percent = await api.lead(f"{marker}-pct@filter.example", company=f"{marker} 50% off")
    underscore = await api.lead(f"{marker}-und@filter.example", company=f"{marker} 50_off")
    await api.lead(f"{marker}-x@filter.example", company=f"{marker} 50x off")  # a wildcard's match
    await api.lead(f"{marker}-500@filter.example", company=f"{marker} 500 off")
    for wanted, literal in ((f"{marker}%2050%25", percent), (f"{marker}%2050_", underscore)):
        found = await api.get(f"/leads?search={wanted}")
        assert [lead["id"] for lead in found["items"]] == [literal["id"]], wanted
    assert (await api.http.get("/leads?status=nonsense")).status_code == 422

    template = await api.template(name=f"T {marker}")
    await api.domain(f"{marker}.filter.example", 1025)
    draft = {"start_mode": "draft"}
    made = await api.campaign(
        template["id"], [tagged["id"]], [f"{marker}.filter.example"], name=f"Spring {marker}", schedule=draft
    )
    assert [c["id"] for c in (await api.get(f"/campaigns?search=spring%20{marker}"))["items"]] == [made["id"]]
    assert (await api.get(f"/campaigns?search={marker}&status=draft"))["total"] == 1
    assert (await api.get(f"/campaigns?search={marker}&status=running"))["total"] == 0
    assert (await api.get(f"/campaigns?search={marker}&created_from=2999-01-01T00:00:00%2B00:00"))[
        "total"
    ] == 0
    assert (await api.get(f"/templates?search=T%20{marker}"))["total"] == 1
    assert (await api.get(f"/domains?search={marker}"))["total"] == 1


# The schema as PostgreSQL holds it, each kind of object as sorted text: what a migration must leave the same.
# Not a column's position: one dropped and added again goes to the end, whatever the migrations do.
SCHEMA = {
    "columns": """
        SELECT format('%s.%s %s%s%s%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN ' not null' END,
                      ' identity ' || nullif(a.attidentity::text, ''),
                      ' default ' || pg_get_expr(d.adbin, d.adrelid))
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": """
        SELECT format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
    "indexes": "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "triggers": "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal",
    "functions": """
        SELECT pg_get_functiondef(p.oid) FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT FROM pg_depend WHERE objid = p.oid AND deptype = 'e')""",
    "types": """
        SELECT format('%s %s', t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder))
        FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.typnamespace = 'public'::regnamespace GROUP BY t.typname""",
    "sequences": """
        SELECT format('%s %s %s %s', sequencename, data_type, increment_by, start_value)
        FROM pg_sequences WHERE schemaname = 'public'""",
}


async def schema_of(database_url: str) -> dict[str, list[str]]:
    """Our schema, without alembic's own bookkeeping table."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return {
                kind: sorted(row for row in (await connection.execute(text(query))).scalars())
                for kind, query in SCHEMA.items()
            }
    finally:
        await engine.dispose()


def test_each_migration_goes_down_to_exactly_the_schema_before_it(settings: Settings) -> None:
    """Up one revision at a time from an empty database (of its own), then down one at a time: each downgrade
    leaves the schema its revision started from, and going up again ends at the same head."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from shared.db.migrate import alembic_config, drop_database, ensure_database

    url = settings.database_url.rsplit("/", 1)[0] + f"/maildash_migrations_{uuid.uuid4().hex[:8]}"
    config = alembic_config(url)
    revisions = [
        "base",
        *reversed([r.revision for r in ScriptDirectory.from_config(config).walk_revisions()]),
    ]

    def schema() -> dict[str, list[str]]:
        return {
            kind: [row for row in rows if "alembic_version" not in row]
            for kind, rows in asyncio.run(schema_of(url)).items()
        }

    try:
        asyncio.run(ensure_database(url))
        schemas = {"base": schema()}
        for revision in revisions[1:]:
            command.upgrade(config, revision)
            schemas[revision] = schema()
        assert schemas["base"] == {kind: [] for kind in SCHEMA}
        assert len(schemas[revisions[-1]]["columns"]) > 50  # the dump does see our tables
        for previous, revision in reversed(list(pairwise(revisions))):
            command.downgrade(config, previous)
            assert schema() == schemas[previous], f"down from {revision}"
        command.upgrade(config, "head")
        assert schema() == schemas[revisions[-1]]
    finally:
        asyncio.run(drop_database(url))


async def test_every_answer_names_its_request_and_a_crash_says_which(settings: Settings) -> None:
    from services.api.main import create_app

    app = create_app(settings)

    @app.get("/test-crash")  # outside /api/v1, where every route needs a token first
    async def crash() -> None:
        raise RuntimeError("a bug with internals: password=hunter2")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        given = await client.get("/api/v1/nothing-here", headers={"X-Request-ID": "trace-42"})
        assert given.headers["x-request-id"] == "trace-42"
        made = await client.get("/api/v1/nothing-here", headers={"X-Request-ID": "bad id\x7f"})
        assert len(made.headers["x-request-id"]) == 32  # an unusable id is replaced by a fresh one
        crashed = await client.get("/test-crash", headers={"X-Request-ID": "trace-43"})
    assert crashed.status_code == 500
    body = crashed.json()
    assert (body["data"], body["error_code"]) == (None, "internal_error")
    assert "trace-43" in body["error"]
    assert "hunter2" not in crashed.text
