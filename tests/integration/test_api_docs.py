"""The OpenAPI document the api serves is exact, over the whole document (a new route is held to it too);
its documentation pages render in a real browser with no CDN; and it serves the AsyncAPI document of the
events."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared import asyncapi
from shared.message_states import CampaignStatus, LeadStatus, MessageStatus
from shared.settings import Settings
from tests.support.api import ApiClient
from tests.support.chromium import needs_chromium, rendered_dom

pytestmark = pytest.mark.integration

LOGIN = ("post", "/api/v1/auth/token")  # the one route without a token, answering a plain OAuth2 body
# Properties that name a state: each must be an enum of its values.
STATE_NAMES = re.compile(r"^(status|state|security)$|_(status|state)$")


@pytest.fixture(scope="module")
async def spec(api_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"{api_url}/openapi.json")
    assert reply.status_code == 200
    document: dict[str, Any] = reply.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def singular(noun: str) -> str:
    """`campaigns` → `campaign`, `deliveries` → `delivery`, `esp-webhooks` → `esp_webhook`."""
    noun = noun.replace("-", "_")
    return noun[:-3] + "y" if noun.endswith("ies") else noun.removesuffix("s")


def test_each_operation_has_an_id_one_tag_and_path_ids_named_after_their_resource(
    spec: dict[str, Any],
) -> None:
    ids = [operation.get("operationId") for _, _, operation in operations(spec)]
    assert None not in ids
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for method, path, operation in operations(spec):
        assert len(operation.get("tags", [])) == 1, (method, path, operation.get("tags"))
        assert re.fullmatch(r"[a-z][a-z0-9_]*", operation["operationId"]), operation["operationId"]
        segments = path.split("/")
        for index, segment in enumerate(segments):
            if segment.startswith("{"):
                assert segment == f"{{{singular(segments[index - 1])}_id}}", (method, path)
    # Once each, so Swagger UI and ReDoc list it once (it repeats an operation under each of its tags).
    workspaces = [(m, o["tags"]) for m, p, o in operations(spec) if p == "/api/v1/workspaces"]
    assert workspaces == [("post", ["workspaces"])]


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    references = set(re.findall(r'"#/components/schemas/([^"]+)"', str(spec).replace("'", '"')))
    assert references, "the document references no schema"
    assert references <= set(schemas), references - set(schemas)


def test_every_answer_is_the_envelope_with_error_required(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        for status, answer in operation["responses"].items():
            where = (method.upper(), path, status)
            if (method, path) == LOGIN and status == "200":
                continue
            schema = resolve(spec, answer["content"]["application/json"]["schema"])
            assert {"data", "error"} <= set(schema["required"]), where
            error = schema["properties"]["error"]
            if int(status) < 400:
                assert error == {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Error"}, where
            else:
                expected = "ValidationErrorOut" if status == "422" else "ErrorOut"
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith(expected), where
                assert error["type"] == "string", where
                assert schema["properties"]["data"]["type"] == "null", where
                assert "error_code" in schema["required"], where


def test_every_field_of_every_answer_is_required(spec: dict[str, Any]) -> None:
    """Answers carry every field of their model (null where empty), so a client may rely on each."""
    schemas = spec["components"]["schemas"]
    pending = [
        answer["content"]["application/json"]["schema"]
        for _, _, operation in operations(spec)
        for answer in operation["responses"].values()
    ]
    seen: set[str] = set()
    optional_fields = []
    while pending:
        schema = pending.pop()
        for name in re.findall(r"#/components/schemas/([^'\"]+)", str(schema)):
            if name not in seen:
                seen.add(name)
                pending.append(schemas[name])
        if "properties" in schema:
            optional = set(schema["properties"]) - set(schema.get("required", []))
            optional_fields += [f"{schema.get('title')}.{field}" for field in sorted(optional)]
    assert not optional_fields
    assert {"ErrorOut", "CampaignDetailOut", "TokenOut"} <= seen


def test_every_error_of_its_kind_is_documented(spec: dict[str, Any]) -> None:
    """A token, a path id, a body and parameters each bring their refusal, and every request may be too
    large (the api's gate and FastAPI's validation answer them for every route alike)."""
    for method, path, operation in operations(spec):
        statuses = set(operation["responses"])
        parameters = operation.get("parameters", [])
        body = "requestBody" in operation
        if (method, path) != LOGIN:
            assert operation.get("security"), (method, path)
            assert "401" in statuses, (method, path)
        if any(p["in"] == "path" for p in parameters):
            assert "404" in statuses, (method, path)
        assert "413" in statuses, (method, path)
        if body:
            assert "400" in statuses, (method, path)
        if parameters or body:
            assert "422" in statuses, (method, path)
    token = dict(operations_by_id(spec))["token"]
    assert {"401", "403", "429"} <= set(token["responses"])


def operations_by_id(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for _, _, operation in operations(spec):
        yield operation["operationId"], operation


async def test_what_every_operation_answers_a_stranger_and_an_unknown_id_is_documented(
    api: ApiClient, spec: dict[str, Any], settings: Settings
) -> None:
    """Every operation called without a token, and then with one, unknown ids and an empty JSON body, and
    with a body over the api's limit: each answer's status is documented for that operation, and an error's
    body is the error envelope."""
    seen = set()
    large = b"{" + b" " * settings.api_body_max_bytes + b"}"
    for method, path, operation in operations(spec):
        url = re.sub(r"\{[a-z_]+\}", lambda _: str(uuid.uuid4()), path.removeprefix("/api/v1"))
        documented = set(operation["responses"])
        json_body = {"Content-Type": "application/json"}
        for headers, content in (({"Authorization": ""}, b"{}"), ({}, b"{}"), ({}, large)):
            sent = {**json_body, **headers}
            reply = await api.http.request(method.upper(), url, content=content, headers=sent)
            where = (method.upper(), path, reply.status_code, reply.text[:200])
            assert str(reply.status_code) in documented, where
            body = reply.json()
            seen.add(reply.status_code)
            if reply.status_code < 400:  # a list or the caller: nothing to refuse
                assert body["error"] is None, where
                continue
            assert body["data"] is None, where
            assert isinstance(body["error"], str), where
            assert isinstance(body["error_code"], str), where
            assert ("fields" in body) == (reply.status_code == 422), where
    assert seen == {200, 401, 404, 413, 422}


def test_statuses_are_enums_of_their_values(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for name, schema in schemas.items():
        for field, item in schema.get("properties", {}).items():
            if STATE_NAMES.search(field):
                choices = [resolve(spec, c) for c in item.get("anyOf", [item]) if c.get("type") != "null"]
                assert all("enum" in c for c in choices), f"{name}.{field} is not an enum"
    assert schemas["CampaignStatus"]["enum"] == list(CampaignStatus)
    assert schemas["MessageStatus"]["enum"] == list(MessageStatus)
    assert schemas["LeadStatus"]["enum"] == list(LeadStatus)
    for model, field, values in [
        ("CampaignOut", "status", "CampaignStatus"),
        ("CampaignDetailOut", "status", "CampaignStatus"),
        ("MessageOut", "status", "MessageStatus"),
        ("LeadOut", "status", "LeadStatus"),
    ]:
        assert schemas[model]["properties"][field] == {"$ref": f"#/components/schemas/{values}"}
    assert schemas["SmtpOut"]["properties"]["security"]["enum"] == ["none", "starttls", "tls"]


async def test_docs_pages_load_every_asset_from_the_api(api_url: str) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        for page in ("/docs", "/redoc"):
            html = (await client.get(page)).text
            assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
            assert len(assets) >= 2, html
            for asset in assets:
                assert asset.startswith("/"), (page, asset)  # from the api itself: no CDN
                assert (await client.get(asset)).status_code == 200, (page, asset)
            assert "https://" not in html, page
        redirect = await client.get("/docs/oauth2-redirect")
        assert redirect.status_code == 200
        assert "oauth2" in redirect.text


async def test_the_api_serves_the_asyncapi_document_of_its_broker_names(
    api_url: str, settings: Settings
) -> None:
    async with httpx.AsyncClient(base_url=api_url) as client:
        reply = await client.get("/asyncapi.json")
    assert reply.status_code == 200
    assert reply.json() == asyncapi.document(settings.broker_prefix)
    assert f"{settings.broker_prefix}.sender.message.send" in reply.json()["channels"]


@needs_chromium
async def test_swagger_ui_renders_every_operation_offline(
    api_url: str, spec: dict[str, Any], figures: dict[str, Any]
) -> None:
    """Swagger UI as a browser shows it, on a machine that reaches nothing but this one. (ReDoc's page and
    assets are checked above; rendering it too would double this test's time.)"""
    started = time.perf_counter()
    dom = await rendered_dom(f"{api_url}/docs")
    figures["/docs rendered in"] = f"{time.perf_counter() - started:.1f} s"
    missing = [
        (method, path)
        for method, path, operation in operations(spec)
        if f'id="operations-{operation["tags"][0]}-{operation["operationId"]}"' not in dom
    ]
    assert not missing, (missing, dom[-2000:])
    assert "Maildash Campaigns API" in dom
