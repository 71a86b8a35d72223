"""The response envelope of SPEC §3, for successes and for every error FastAPI or we raise."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.kit.schemas import Answer

T = TypeVar("T")
log = structlog.get_logger()


class Envelope(Answer, Generic[T]):
    data: T
    error: str | None = None  # null on every success; the error envelopes below carry the message


class Page(Answer, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


class ErrorOut(Answer):
    """Every error answer: `error` for people, `error_code` for machines."""

    data: None = None
    error: str
    error_code: str


class FieldError(Answer):
    loc: list[str | int]
    msg: str


class ValidationErrorOut(ErrorOut):
    """A 422: what was wrong with which part of the request."""

    fields: list[FieldError]


class ApiError(Exception):
    """An error for people (`message`) and machines (`code`), answered with `status`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


def invalid(message: str, loc: list[str | int] | None = None) -> ApiError:
    error = ApiError(422, "validation_error", message)
    error.fields = [{"loc": loc or [], "msg": message}]  # type: ignore[attr-defined]
    return error


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"data": None, "error": message, "error_code": code, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        fields = getattr(exc, "fields", None)
        extra = {"fields": fields} if fields is not None else {}
        return error_response(exc.status, exc.code, exc.message, exc.headers, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in fields[:5])
        return error_response(422, "validation_error", f"invalid request: {summary}", fields=fields)

    @app.exception_handler(IntegrityError)
    async def _integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        # A race the handler's own checks could not see: a concurrent insert of the same name, or a delete of
        # a row another one started to use. Nothing was written.
        state = getattr(exc.orig, "sqlstate", None)
        message = {
            "23505": "conflicts with an existing row (created at the same time?)",
            "23503": "still in use by other rows",
        }.get(state or "", "conflicts with existing data")
        return error_response(409, "conflict", message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "-")
        log.exception("api.request.crashed", path=request.url.path, request_id=request_id)
        message = f"internal error; it was logged as request {request_id}: quote that when reporting it"
        return error_response(500, "internal_error", message, {"X-Request-ID": request_id})
