"""Use cases of the accounts: the bootstrap superuser, logins (throttled per address), the principal of a
request, (de)activating users, creating workspaces. Routes call these; SQL lives in the repository."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.api.accounts.passwords import Passwords
from services.api.accounts.repository import AccountRepository
from services.api.kit.auth import Principal
from services.api.kit.envelope import ApiError, conflict, not_found
from shared.clock import utcnow
from shared.db.models import LoginFailure, User, Workspace

MAX_LOGIN_FAILURES = 5
LOGIN_WINDOW = timedelta(minutes=15)
# Each login attempt deletes at most this many expired failures: a steady cost per attempt that still outpaces
# the one row an attempt adds, so the table holds little more than the attempts of the last window.
EXPIRED_FAILURES_PER_ATTEMPT = 100


class Accounts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], passwords: Passwords) -> None:
        self._sessions = sessions
        self._passwords = passwords

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AccountRepository]:
        async with self._sessions() as session:
            yield AccountRepository(session)

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AccountRepository]:
        async with self._sessions() as session, session.begin():
            yield AccountRepository(session)

    async def ensure_superuser(self, email: str, password: str) -> None:
        """First start: the bootstrap superuser in a workspace named `default`."""
        async with self._reading() as repo:
            if await repo.user_by_email(email):
                return
        password_hash = await self._passwords.hash(password)
        async with self._writing() as repo:
            if await repo.user_by_email(email):
                return  # another api process started at the same time
            default = await repo.workspace_named("default", any_case=False)
            if default is None:
                default = Workspace(name="default")
                await repo.add(default)
            await repo.add(
                User(workspace_id=default.id, email=email, password_hash=password_hash, is_superuser=True)
            )

    async def authenticate(self, email: str, password: str) -> Principal | None:
        """The user, or None for a wrong e-mail or password; 429 after too many recent failures, 403 for a
        deactivated user's right password. Unknown addresses cost the same time and count the same way, so
        that neither tells whether an account exists."""
        email = email.lower()
        with self._passwords.admitted():
            user = await self._count_attempt(email)
            verified = await self._passwords.verify(password, user.password_hash if user else None)
        if user is None or not verified:
            return None
        async with self._writing() as repo:
            await repo.clear_failures(email)
        if not user.active:
            raise ApiError(403, "forbidden", "this account is deactivated; ask an administrator")
        return Principal(user.id, user.workspace_id, user.email, user.is_superuser)

    async def _count_attempt(self, email: str) -> User | None:
        """Count this attempt as a failure before its password is checked (a success clears the count), under
        a lock on the address: parallel guesses, in any number of api processes, get at most
        MAX_LOGIN_FAILURES passwords checked per window. Also deletes a few expired failures."""
        async with self._writing() as repo:
            await repo.lock_address(email)
            since = utcnow() - LOGIN_WINDOW
            recent = await repo.failures_since(email, since, MAX_LOGIN_FAILURES)
            if len(recent) >= MAX_LOGIN_FAILURES:
                retry_after = max(1, int((recent[-1] + LOGIN_WINDOW - utcnow()).total_seconds()) + 1)
                raise ApiError(
                    429,
                    "too_many_requests",
                    f"too many failed logins for this address; try again in {retry_after} s",
                    {"Retry-After": str(retry_after)},
                )
            await repo.add(LoginFailure(email=email))
            await repo.forget_expired_failures(since, EXPIRED_FAILURES_PER_ATTEMPT)
            return await repo.user_by_email(email)

    async def principal(self, user_id: uuid.UUID) -> Principal | None:
        """The user as they are now, or None when deleted or deactivated: one indexed read per request."""
        async with self._reading() as repo:
            row = await repo.active_user(user_id)
        return Principal(*row) if row else None

    async def set_active(self, by: Principal, email: str, *, active: bool) -> dict[str, Any]:
        """Deactivate (or reactivate) a user: their tokens stop working with the next request."""
        if not active and email.lower() == by.email.lower():
            raise conflict("you cannot deactivate yourself")
        async with self._writing() as repo:
            user = await repo.user_by_email(email)
            if user is None:
                raise not_found("user")
            await repo.set_active(user, active)
            return user_out(user)

    async def create_workspace(self, name: str, admin_email: str, admin_password: str) -> dict[str, Any]:
        """A workspace and its first admin, in one transaction: both or neither."""
        password_hash = await self._passwords.hash(admin_password)
        async with self._writing() as repo:
            if await repo.workspace_named(name, any_case=True):
                raise conflict(f"a workspace named {name!r} already exists")
            if await repo.user_by_email(admin_email):
                raise conflict(f"a user with e-mail {admin_email} already exists")
            workspace = Workspace(name=name)
            await repo.add(workspace)
            admin = User(workspace_id=workspace.id, email=admin_email.lower(), password_hash=password_hash)
            await repo.add(admin)
            return {
                "workspace": {"id": str(workspace.id), "name": workspace.name},
                "admin": {"id": str(admin.id), "email": admin.email},
            }

    async def me(self, principal: Principal) -> dict[str, Any]:
        async with self._reading() as repo:
            workspace = await repo.workspace(principal.workspace_id)
        return {
            "user": {
                "id": str(principal.user_id),
                "email": principal.email,
                "is_superuser": principal.is_superuser,
            },
            "workspace": {"id": str(principal.workspace_id), "name": workspace.name if workspace else None},
        }


def user_out(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "workspace_id": str(user.workspace_id),
        "is_superuser": user.is_superuser,
        "active": user.active,
    }
