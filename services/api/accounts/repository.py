"""All SQL of the accounts: users, workspaces and login failures. Accounts are not rows of one workspace (a
login looks its user up by address across all of them), so this is the one repository that is not a
`WorkspaceRepository`; it touches none of a workspace's resources."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import LoginFailure, User, Workspace

LOGIN_LOCKS = 0x4C4F47  # advisory lock class of the per-address login locks ("LOG")


class AccountRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def user_by_email(self, email: str) -> User | None:
        result = await self.session.scalars(select(User).where(func.lower(User.email) == email.lower()))
        return result.first()

    async def active_user(self, user_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID, str, bool] | None:
        """(id, workspace id, e-mail, superuser) of an active user: one indexed read per request."""
        row = (
            await self.session.execute(
                select(User.id, User.workspace_id, User.email, User.is_superuser).where(
                    User.id == user_id, User.active
                )
            )
        ).first()
        return (row[0], row[1], row[2], row[3]) if row else None

    async def workspace(self, workspace_id: uuid.UUID) -> Workspace | None:
        return await self.session.get(Workspace, workspace_id)

    async def workspace_named(self, name: str, *, any_case: bool) -> Workspace | None:
        named = func.lower(Workspace.name) == name.lower() if any_case else Workspace.name == name
        found: Workspace | None = await self.session.scalar(select(Workspace).where(named))
        return found

    async def set_active(self, user: User, active: bool) -> None:
        user.active = active
        await self.session.flush()

    async def add(self, row: Any) -> None:
        self.session.add(row)
        await self.session.flush()

    async def lock_address(self, email: str) -> None:
        """Serialise the logins of one address until the transaction ends, across api processes."""
        await self.session.execute(select(func.pg_advisory_xact_lock(LOGIN_LOCKS, func.hashtext(email))))

    async def failures_since(self, email: str, since: datetime, most: int) -> list[datetime]:
        """The times of this address's failed logins after `since`, newest first, at most `most`."""
        return list(
            await self.session.scalars(
                select(LoginFailure.at)
                .where(LoginFailure.email == email, LoginFailure.at > since)
                .order_by(LoginFailure.at.desc())
                .limit(most)
            )
        )

    async def forget_expired_failures(self, before: datetime, most: int) -> None:
        """Delete up to `most` failures of any address from `before` or earlier (skipping locked rows)."""
        expired = (
            select(LoginFailure.id)
            .where(LoginFailure.at <= before)
            .limit(most)
            .with_for_update(skip_locked=True)
        )
        await self.session.execute(delete(LoginFailure).where(LoginFailure.id.in_(expired.scalar_subquery())))

    async def clear_failures(self, email: str) -> None:
        await self.session.execute(delete(LoginFailure).where(LoginFailure.email == email))
