"""What every route needs: the workspace-scoped unit of work and pagination."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Query, Request

from services.api.auth import Principal
from services.api.repository import Repository


@contextlib.asynccontextmanager
async def unit_of_work(request: Request, principal: Principal) -> AsyncIterator[Repository]:
    """One session per request, scoped to the token's workspace, committed when the block ends cleanly."""
    async with request.app.state.runtime.sessions() as session, session.begin():
        yield Repository(session, principal.workspace_id)


PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=200)]
