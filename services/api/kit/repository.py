"""The one place where the api scopes its queries to a workspace.

A resource's repository derives from `WorkspaceRepository` and builds every statement on its own table from
`scoped()`, `scoped_update()` or `scoped_delete()`, which carry `workspace_id = <the caller's workspace>`;
rows are read, inserted, reloaded, changed and deleted only through the methods below, which do the same.
A table without a `workspace_id` of its own (a campaign's audience, a lead's report) is reached through its
owner's row, filtered the same way. `tests/integration/test_api_scoping.py` runs every repository method
through the api and fails on a statement that touches a workspace's table without the caller's workspace.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import ColumnElement, Delete, Select, Update, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.kit.envelope import not_found
from shared.db.models import (
    Campaign,
    EspWebhook,
    Lead,
    MailboxAccount,
    Message,
    OAuthAccount,
    OAuthFlow,
    SendingDomain,
    Suppression,
    Template,
    WebhookEndpoint,
    WorkspaceSetting,
)

Owned = TypeVar(
    "Owned",
    Campaign,
    Lead,
    SendingDomain,
    Template,
    Suppression,
    Message,
    MailboxAccount,
    OAuthAccount,
    OAuthFlow,
    EspWebhook,
    WebhookEndpoint,
    WorkspaceSetting,
)
R = TypeVar("R", bound="WorkspaceRepository[Any]")


def parse_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


class WorkspaceRepository(Generic[Owned]):
    """Queries on one workspace's rows of `model`. Subclasses name `model`, `noun` (for "… not found") and the
    columns `search` matches."""

    model: ClassVar[type[Any]]
    noun: ClassVar[str]
    searched: ClassVar[tuple[Any, ...]] = ()

    def __init__(self, session: AsyncSession, workspace_id: uuid.UUID) -> None:
        self.session = session
        self.workspace_id = workspace_id

    def sibling(self, other: type[R]) -> R:
        """Another resource's repository in the same transaction and workspace."""
        return other(self.session, self.workspace_id)

    # ── statements: each carries the workspace ──────────────────────────────────────────────────────────
    def owns(self, model: type[Any] | None = None) -> ColumnElement[bool]:
        owner: ColumnElement[bool] = (model or self.model).workspace_id == self.workspace_id
        return owner

    def scoped(self, *columns: Any, model: type[Any] | None = None) -> Select[Any]:
        """`SELECT columns (the row by default) FROM model WHERE model.workspace_id = <workspace>`."""
        model = model or self.model
        return select(*(columns or (model,))).select_from(model).where(self.owns(model))

    def scoped_update(self, model: type[Any] | None = None) -> Update:
        model = model or self.model
        return update(model).where(self.owns(model))

    def scoped_delete(self, model: type[Any] | None = None) -> Delete:
        model = model or self.model
        return delete(model).where(self.owns(model))

    # ── rows ───────────────────────────────────────────────────────────────────────────────────────────
    async def get(self, raw_id: str) -> Owned | None:
        """The row with this id in the workspace, or None (another workspace's row is not found either)."""
        row_id = parse_id(raw_id)
        if row_id is None:
            return None
        row: Owned | None = await self.session.scalar(self.scoped().where(self.model.id == row_id))
        return row

    async def require(self, raw_id: str) -> Owned:
        """The row with this id in the workspace; 404 otherwise."""
        row = await self.get(raw_id)
        if row is None:
            raise not_found(self.noun)
        return row

    async def page(
        self, page: int, page_size: int, search: str | None, *where: Any
    ) -> tuple[list[Owned], int]:
        """Newest first; `search` matches any of the `searched` columns."""
        if search:
            where = (*where, or_(*(column.icontains(search, autoescape=True) for column in self.searched)))
        total = await self.session.scalar(self.scoped(func.count()).where(*where))
        rows = await self.session.scalars(
            self.scoped()
            .where(*where)
            .order_by(self.model.created_at.desc(), self.model.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return list(rows), total or 0

    async def exists(self, statement: Select[Any]) -> bool:
        """Whether `statement` (built from `scoped()`) finds a row."""
        return await self.session.scalar(statement.limit(1)) is not None

    async def add(self, row: Owned) -> Owned:
        """Insert `row` into the workspace and read back what the database filled in."""
        row.workspace_id = self.workspace_id
        self.session.add(row)
        await self.session.flush()
        return await self.reload(row)

    async def reload(self, row: Owned, *, lock: bool = False) -> Owned:
        """The row as the database has it now (`lock`: FOR UPDATE until the transaction ends)."""
        statement = self.scoped(model=type(row)).where(type(row).id == row.id)
        if lock:
            statement = statement.with_for_update()
        reloaded: Owned = (
            await self.session.scalars(statement, execution_options={"populate_existing": True})
        ).one()
        return reloaded

    async def change(self, row: Owned, changes: dict[str, Any]) -> Owned:
        """Set these columns of `row`; the row as it is afterwards."""
        if changes:
            statement = self.scoped_update(type(row)).where(type(row).id == row.id).values(**changes)
            await self.session.execute(statement, execution_options={"synchronize_session": False})
        return await self.reload(row)

    async def delete(self, row: Owned) -> None:
        statement = self.scoped_delete(type(row)).where(type(row).id == row.id)
        await self.session.execute(statement, execution_options={"synchronize_session": False})
        self.session.expunge(row)
