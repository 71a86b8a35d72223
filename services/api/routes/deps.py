"""What every route needs: the workspace-scoped unit of work and pagination."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Query, Request
from sqlalchemy import or_

from services.api.auth import Principal
from services.api.envelope import invalid
from services.api.repository import Repository
from services.api.schemas import storable
from shared.db.models import Campaign, Lead, SendingDomain, Suppression, Template


@contextlib.asynccontextmanager
async def unit_of_work(request: Request, principal: Principal) -> AsyncIterator[Repository]:
    """One session per request, scoped to the token's workspace, committed when the block ends cleanly."""
    async with request.app.state.runtime.sessions() as session, session.begin():
        yield Repository(session, principal.workspace_id)


PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=200)]


def searchable(value: str | None, name: str) -> str | None:
    """A free-text filter, refused with 422 when PostgreSQL could not compare it."""
    try:
        return storable(value)  # type: ignore[no-any-return]
    except ValueError as error:
        raise invalid(str(error), ["query", name]) from error


Search = Annotated[str | None, Query(max_length=200)]


def _matching(*columns: Any) -> Callable[[str], list[Any]]:
    return lambda text: [or_(*(column.icontains(text, autoescape=True) for column in columns))]


SEARCHED: dict[type[Any], Callable[[str], list[Any]]] = {
    SendingDomain: _matching(SendingDomain.domain, SendingDomain.from_email),
    Lead: _matching(Lead.email, Lead.first_name, Lead.last_name, Lead.company),
    Template: _matching(Template.name, Template.subject),
    Campaign: _matching(Campaign.name),
    Suppression: _matching(Suppression.email, Suppression.domain),
}


async def page_of(
    request: Request,
    principal: Principal,
    model: type[Any],
    to_out: Callable[[Any], dict[str, Any]],
    page: int,
    page_size: int,
    search: str | None,
    *where: Any,
) -> dict[str, Any]:
    conditions = [*where, *SEARCHED[model](text)] if (text := searchable(search, "search")) else list(where)
    async with unit_of_work(request, principal) as repo:
        rows, total = await repo.page(model, page, page_size, *conditions)
        items = [to_out(r) for r in rows]
    return {"data": {"items": items, "total": total, "page": page, "page_size": page_size}}
