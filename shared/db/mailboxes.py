"""A sending domain's IMAP mailbox (SPEC §8: its `imap` object beside `smtp`): saving and reading the account,
for the api; the tracker's mailbox reader reads it too. The password is stored encrypted like the SMTP one
(`shared.crypto`) and never read back out; the host obeys the public-address rule like an SMTP host."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared import crypto
from shared.db.models import MailboxAccount
from shared.public_address import resolve_public
from shared.settings import Settings

Security = Literal["tls", "starttls", "none"]
# What a change of these means: another mailbox, whose failures so far say nothing.
CONNECTION_FIELDS = ("host", "port", "security", "username", "password_encrypted")


@dataclass(frozen=True)
class ImapAccount:
    """What a tenant gives for a mailbox. `password` None keeps the stored one (an edit without it)."""

    host: str
    port: int
    security: Security
    username: str
    password: str | None
    folders: list[str] = field(default_factory=lambda: ["INBOX"])
    reports_folder: str | None = None  # DSNs and complaint reports are moved there when set
    active: bool = True


async def check_host(settings: Settings, host: str, port: int) -> None:
    """Raises `shared.public_address.UnusableHost` for a host that does not resolve, or resolves to an address
    that is not public (in production, unless the operator allows private hosts): the rule of SMTP hosts. The
    reader judges it again at every connection."""
    if not settings.private_hosts_allowed:
        await resolve_public(host, port, allow_private=False, timeout=5)


async def save_account(
    session: AsyncSession,
    settings: Settings,
    workspace_id: uuid.UUID,
    sending_domain_id: uuid.UUID,
    account: ImapAccount,
) -> uuid.UUID:
    """Create or replace the domain's mailbox account (check its host first with `check_host`). A new account
    needs a password. Its id."""
    values: dict[str, Any] = {
        "host": account.host,
        "port": account.port,
        "security": account.security,
        "username": account.username,
        "folders": list(dict.fromkeys(account.folders)) or ["INBOX"],
        "reports_folder": account.reports_folder,
        "active": account.active,
    }
    if account.password is not None:
        values["password_encrypted"] = crypto.encrypt(settings.encryption_key, account.password)
    existing = await session.scalar(
        select(MailboxAccount).where(MailboxAccount.sending_domain_id == sending_domain_id).with_for_update()
    )
    if existing is None:
        if account.password is None:
            raise ValueError("a new mailbox account needs its password")
        statement = insert(MailboxAccount).values(
            id=uuid.uuid4(), workspace_id=workspace_id, sending_domain_id=sending_domain_id, **values
        )
        return uuid.UUID(str((await session.execute(statement.returning(MailboxAccount.id))).scalar_one()))
    if any(name in values and values[name] != getattr(existing, name) for name in CONNECTION_FIELDS):
        existing.failures, existing.last_error, existing.last_error_at = 0, None, None
    for name, value in values.items():
        setattr(existing, name, value)
    await session.flush()
    return existing.id


async def account_of(
    session: AsyncSession, sending_domain_id: uuid.UUID, settings: Settings
) -> dict[str, Any] | None:
    """The domain's mailbox as the api shows it, without the password; `state` is `ok`, `retrying` (it
    failed, fewer than `inbox_max_failures` times in a row) or `failing` (show `last_error`)."""
    row = await session.scalar(
        select(MailboxAccount).where(MailboxAccount.sending_domain_id == sending_domain_id)
    )
    if row is None:
        return None
    state = "ok" if row.failures == 0 else "retrying"
    if row.failures >= settings.inbox_max_failures:
        state = "failing"
    return {
        "host": row.host,
        "port": row.port,
        "security": row.security,
        "username": row.username,
        "folders": list(row.folders),
        "reports_folder": row.reports_folder,
        "active": row.active,
        "state": state,
        "failures": row.failures,
        "last_error": row.last_error,
        "last_error_at": row.last_error_at,
        "last_success_at": row.last_success_at,
        "idle_supported": row.idle_supported,
    }


async def delete_account(session: AsyncSession, sending_domain_id: uuid.UUID) -> bool:
    """Remove the domain's mailbox (its checkpoints and processed mails go with it)."""
    result = await session.execute(
        delete(MailboxAccount)
        .where(MailboxAccount.sending_domain_id == sending_domain_id)
        .returning(MailboxAccount.id)
    )
    return result.first() is not None
