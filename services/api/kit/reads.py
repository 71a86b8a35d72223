"""The two reads every resource has: a page of its rows and one row by id, in the caller's workspace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import PageNumber, PageSize, Search, page_of, unit_of_work
from services.api.kit.envelope import Envelope, Page
from services.api.kit.repository import WorkspaceRepository


def add_reads(
    router: APIRouter,
    path: str,
    repository: type[WorkspaceRepository[Any]],
    schema: type[Any],
    to_out: Callable[[Any], dict[str, Any]],
    listed: bool = True,
    detailed: bool = True,
) -> None:
    """`GET /<path>` (a page, newest first; `search` over its text columns) and `GET /<path>/{id}`, scoped to
    the caller's workspace. `listed=False` for a resource whose list route takes more filters,
    `detailed=False` for one whose detail shows more than its row."""

    async def list_rows(
        request: Request,
        principal: CurrentPrincipal,
        page: PageNumber = 1,
        page_size: PageSize = 20,
        search: Search = None,
    ) -> dict[str, Any]:
        return await page_of(request, principal, repository, to_out, page, page_size, search)

    if listed:
        router.add_api_route(
            f"/{path}",
            list_rows,
            response_model=Envelope[Page[schema]],  # type: ignore[valid-type]
            tags=[path],
            name=f"list_{path}",
        )

    async def get_row(request: Request, principal: CurrentPrincipal, row_id: str) -> dict[str, Any]:
        async with unit_of_work(request, principal, repository) as repo:
            return {"data": to_out(await repo.require(row_id))}

    if detailed:
        router.add_api_route(
            f"/{path}/{{row_id}}",
            get_row,
            response_model=Envelope[schema],  # type: ignore[valid-type]
            tags=[path],
            name=f"get_{path}",
        )


def row_out(row: Any) -> dict[str, Any]:
    """A row as its response body: every column (the id as text), nullable ones also when empty."""
    return {
        c.key: (str(v) if c.key == "id" else v)
        for c in row.__table__.columns
        if (v := getattr(row, c.key)) is not None or c.nullable
    }
