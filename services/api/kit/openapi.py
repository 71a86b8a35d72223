"""The api's OpenAPI document, exact, and its documentation pages, offline.

The document is FastAPI's, with what a client relies on added in one place, so that a new route has it too:
- each operation's id is its route's name (`get_campaign`), and it has one tag, its resource;
- every error the api may answer is documented with the error envelope: 401 on each operation behind the
  bearer token, 404 on each with a path id, 400 and 413 on each with a body, 422 (with `fields`) on each with
  parameters or a body; the others (403, 409, 429, 503) where the route declares them with `errors()`.
`tests/integration/test_api_docs.py` holds the whole document to these rules.

Swagger UI (`/docs`) and ReDoc (`/redoc`) load their scripts and styles from the api itself
(`/docs/assets/…`, the files of the fastapi-offline package in uv.lock): no CDN. Beside them, `/asyncapi.json`
is the AsyncAPI document of the events (`shared/asyncapi.py`).
"""

from __future__ import annotations

import asyncio
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from services.api.kit.envelope import ErrorOut, ValidationErrorOut
from shared import asyncapi

ERRORS = {
    400: "The body cannot be parsed: not UTF-8 JSON, or not the form the route reads (`bad_request`).",
    401: "No valid bearer token, or its user is gone or deactivated (`unauthorized`).",
    403: "The caller may not do this (`forbidden`).",
    404: "No such row in the caller's workspace, whatever the id's shape (`not_found`).",
    409: "Conflicts with what exists or with the row's state; nothing changed (`conflict`).",
    413: "The body is larger than this route takes (`payload_too_large`).",
    422: "Invalid request; `fields` says where (`validation_error`).",
    429: "Too many requests; `Retry-After` says when to try again (`too_many_requests`).",
    503: "Something the route needs cannot answer now; try again (`unavailable`).",
}
ASSETS = "/docs/assets"
OPENAPI_URL = "/openapi.json"


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route for the errors it answers beyond those every route of its kind has."""
    return {
        status: {"model": ValidationErrorOut if status == 422 else ErrorOut, "description": ERRORS[status]}
        for status in statuses
    }


def operation_id(route: APIRoute) -> str:
    return route.name


def _ref(model: type[ErrorOut]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _error_answer(status: int) -> dict[str, Any]:
    model = ValidationErrorOut if status == 422 else ErrorOut
    return {"description": ERRORS[status], "content": {"application/json": {"schema": _ref(model)}}}


def _statuses_of_its_kind(operation: dict[str, Any]) -> list[int]:
    parameters = operation.get("parameters", [])
    body = "requestBody" in operation
    return [
        *([401] if operation.get("security") else []),
        *([404] if any(p["in"] == "path" for p in parameters) else []),
        *([400] if body else []),
        413,  # the gate bounds the body of every request, one to a route that reads none too
        *([422] if parameters or body else []),
    ]


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with every operation's errors in the envelope (cached as FastAPI caches its own)."""
    if app.openapi_schema is None:
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            openapi_version=app.openapi_version,
            separate_input_output_schemas=app.separate_input_output_schemas,
        )
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in (ErrorOut, ValidationErrorOut):
            found = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
            schemas.update(found.pop("$defs", {}))
            schemas[model.__name__] = found
        schemas.pop("HTTPValidationError", None)  # FastAPI's 422, which this api never answers
        schemas.pop("ValidationError", None)
        for operations in spec["paths"].values():
            for operation in operations.values():
                answers = operation["responses"]
                for status in _statuses_of_its_kind(operation):
                    answers[str(status)] = _error_answer(status)
                operation["responses"] = dict(sorted(answers.items()))
        app.openapi_schema = spec
    return app.openapi_schema


def install_docs(app: FastAPI, title: str, broker_prefix: str) -> None:
    """The document at /openapi.json, Swagger UI at /docs and ReDoc at /redoc, with their assets, and the
    AsyncAPI document of the events on this deployment's broker names at /asyncapi.json."""
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    app.mount(ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{title} · Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
            # No badge from the online validator (it would call validator.swagger.io); the token is kept in
            # the page only, not in the browser's storage.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{title} · ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )

    events: dict[str, Any] = {}

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_document() -> JSONResponse:
        if not events:  # made at the first request (a quarter of a second), not at every start
            events.update(await asyncio.to_thread(asyncapi.document, broker_prefix))
        return JSONResponse(events)
