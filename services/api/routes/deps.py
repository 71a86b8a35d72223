"""What every route needs: the workspace-scoped unit of work and pagination."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Query, Request

from services.api.auth import Principal
from services.api.envelope import invalid
from services.api.repository import Repository
from services.api.schemas import storable


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
