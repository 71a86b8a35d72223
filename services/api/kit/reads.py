"""The two reads every resource has: a page of its rows and one row by id, in the caller's workspace."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request

from services.api.kit.auth import CurrentPrincipal
from services.api.kit.deps import PageNumber, PageSize, Search, page_of, unit_of_work
from services.api.kit.envelope import Envelope, Page
from services.api.kit.repository import WorkspaceRepository

# How a resource's rows are shown: all of a page at once, with the repository they were read through (for
# what their answer adds, such as a domain's health figures), and the settings where `with_settings`.
Shown = Callable[..., Awaitable[list[dict[str, Any]]]]


def each(to_out: Callable[..., dict[str, Any]]) -> Shown:
    """Rows shown one by one, from their columns alone (and the settings, for `with_settings`)."""

    async def shown(_: Any, rows: list[Any], **context: Any) -> list[dict[str, Any]]:
        return [to_out(row, **context) for row in rows]

    return shown


def add_reads(
    router: APIRouter,
    path: str,
    noun: str,
    repository: type[WorkspaceRepository[Any]],
    schema: type[Any],
    shown: Shown,
    listed: bool = True,
    with_settings: bool = False,
    detailed: bool = True,
) -> None:
    """`GET /<path>` (`list_<path>`: a page, newest first; `search` over its text columns) and
    `GET /<path>/{<noun>_id}` (`get_<noun>`), scoped to the caller's workspace. `listed=False` for a resource
    whose list route takes more filters, `detailed=False` for one whose detail shows more than its row;
    `with_settings` for rows shown with the settings (`each(to_out)` calls `to_out(row, settings=...)`)."""

    def showing(request: Request) -> Shown:
        settings = request.app.state.runtime.settings
        return functools.partial(shown, settings=settings) if with_settings else shown

    async def list_rows(
        request: Request,
        principal: CurrentPrincipal,
        page: PageNumber = 1,
        page_size: PageSize = 20,
        search: Search = None,
    ) -> dict[str, Any]:
        return await page_of(request, principal, repository, showing(request), page, page_size, search)

    if listed:
        router.add_api_route(
            f"/{path}",
            list_rows,
            response_model=Envelope[Page[schema]],  # type: ignore[valid-type]
            name=f"list_{path.replace('-', '_')}",
        )

    id_name = f"{noun}_id"

    async def get_row(request: Request, principal: CurrentPrincipal, **path_id: str) -> dict[str, Any]:
        async with unit_of_work(request, principal, repository) as repo:
            [one] = await showing(request)(repo, [await repo.require(path_id[id_name])])
            return {"data": one}

    # The path parameter is named after the resource (`{domain_id}`), as on the resource's other routes.
    get_row.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter(
                "principal", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=CurrentPrincipal
            ),
            inspect.Parameter(id_name, inspect.Parameter.KEYWORD_ONLY, annotation=str),
        ]
    )
    if detailed:
        router.add_api_route(
            f"/{path}/{{{id_name}}}",
            get_row,
            response_model=Envelope[schema],  # type: ignore[valid-type]
            name=f"get_{noun}",
        )


def row_out(row: Any) -> dict[str, Any]:
    """A row as its response body: every column (the id as text), nullable ones also when empty."""
    return {
        c.key: (str(v) if c.key == "id" else v)
        for c in row.__table__.columns
        if (v := getattr(row, c.key)) is not None or c.nullable
    }
