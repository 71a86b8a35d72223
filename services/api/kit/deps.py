"""What every route needs: the workspace-scoped unit of work, pagination and free-text filters."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Annotated, Any, TypeVar

from fastapi import Query, Request

from services.api.kit.auth import Principal
from services.api.kit.envelope import invalid
from services.api.kit.repository import WorkspaceRepository
from services.api.kit.schemas import storable

R = TypeVar("R", bound=WorkspaceRepository[Any])


@contextlib.asynccontextmanager
async def unit_of_work(request: Request, principal: Principal, repository: type[R]) -> AsyncIterator[R]:
    """One session per request, scoped to the token's workspace, committed when the block ends cleanly."""
    async with request.app.state.runtime.sessions() as session, session.begin():
        yield repository(session, principal.workspace_id)


PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=200)]
Search = Annotated[str | None, Query(max_length=200)]


def searchable(value: str | None, name: str) -> str | None:
    """A free-text filter, refused with 422 when PostgreSQL could not compare it."""
    try:
        return storable(value)  # type: ignore[no-any-return]
    except ValueError as error:
        raise invalid(str(error), ["query", name]) from error


def page_out(items: Iterable[Any], total: int, page: int, page_size: int) -> dict[str, Any]:
    return {"data": {"items": list(items), "total": total, "page": page, "page_size": page_size}}


async def page_of(
    request: Request,
    principal: Principal,
    repository: type[WorkspaceRepository[Any]],
    shown: Callable[[Any, list[Any]], Awaitable[list[dict[str, Any]]]],
    page: int,
    page_size: int,
    search: str | None,
    *where: Any,
) -> dict[str, Any]:
    """A page of the workspace's rows of one resource, newest first."""
    text = searchable(search, "search")
    async with unit_of_work(request, principal, repository) as repo:
        rows, total = await repo.page(page, page_size, text, *where)
        items = await shown(repo, rows)
    return page_out(items, total, page, page_size)
