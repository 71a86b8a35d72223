"""All SQL of the mailbox reader: leases, reader heartbeats, checkpoints, processed mails and each account's
health. What a mail causes is a transition of `shared.db.message_store` (through `returns.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    workspace_id: uuid.UUID
    sending_domain_id: uuid.UUID
    from_email: str
    host: str
    port: int
    security: str
    username: str
    password_encrypted: str | None  # none: it logs in with its domain's OAuth2 grant
    folders: list[str]
    reports_folder: str | None
    failures: int
    created_at: datetime


# A claimed mail's row, its outcome, the message it concerned and the reason it was skipped.
Settled = tuple[int, str, uuid.UUID | None, str | None]


@dataclass(frozen=True)
class Place:
    """Where a mail is: a UID means something only with its folder's UIDVALIDITY."""

    account_id: uuid.UUID
    folder: str
    uidvalidity: int
    uid: int


async def account(session: AsyncSession, account_id: uuid.UUID) -> Account | None:
    row = (
        await session.execute(
            text(
                "SELECT a.id, a.workspace_id, a.sending_domain_id, lower(d.from_email) AS from_email, a.host,"
                " a.port, a.security, a.username, a.password_encrypted, a.folders, a.reports_folder,"
                " a.failures, a.created_at"
                " FROM mailbox_accounts AS a JOIN sending_domains AS d ON d.id = a.sending_domain_id"
                " WHERE a.id = :id AND a.active"
            ),
            {"id": account_id},
        )
    ).first()
    return None if row is None else Account(**row._mapping)


# Leases: one reader per account. A lease is taken when it is free or expired, under the row's lock, so two
# readers never both win; renewing returns the accounts still held (a lost one is stopped at once).


async def heartbeat(session: AsyncSession, holder: str, lease_seconds: float) -> tuple[int, int]:
    """This reader is alive. The active accounts, and the live readers (this one included)."""
    await session.execute(
        text(
            "INSERT INTO mailbox_readers (holder, seen_at) VALUES (:holder, now())"
            " ON CONFLICT (holder) DO UPDATE SET seen_at = now()"
        ),
        {"holder": holder},
    )
    await session.execute(
        text("DELETE FROM mailbox_readers WHERE seen_at < now() - make_interval(secs => :ttl * 3)"),
        {"ttl": lease_seconds},
    )
    row = (
        await session.execute(
            text(
                "SELECT (SELECT count(*) FROM mailbox_accounts WHERE active) AS accounts,"
                " (SELECT count(*) FROM mailbox_readers WHERE seen_at > now() - make_interval(secs => :ttl))"
                " AS readers"
            ),
            {"ttl": lease_seconds},
        )
    ).one()
    return int(row.accounts), max(1, int(row.readers))


async def claim(session: AsyncSession, holder: str, wanted: int, lease_seconds: float) -> list[uuid.UUID]:
    """Up to `wanted` active accounts no live reader holds, leased to `holder`."""
    if wanted <= 0:
        return []
    rows = await session.execute(
        text(
            "INSERT INTO mailbox_leases AS l (account_id, holder, expires_at)"
            " SELECT a.id, :holder, now() + make_interval(secs => :ttl) FROM mailbox_accounts AS a"
            " LEFT JOIN mailbox_leases AS held ON held.account_id = a.id"
            " WHERE a.active AND (held.account_id IS NULL OR held.expires_at < now())"
            " ORDER BY held.expires_at NULLS FIRST, a.id LIMIT :wanted"
            " ON CONFLICT (account_id) DO UPDATE"
            " SET holder = excluded.holder, expires_at = excluded.expires_at"
            " WHERE l.expires_at < now()"
            " RETURNING account_id"
        ),
        {"holder": holder, "ttl": lease_seconds, "wanted": wanted},
    )
    return [row.account_id for row in rows]


async def renew(
    session: AsyncSession, holder: str, account_ids: list[uuid.UUID], lease_seconds: float
) -> set[uuid.UUID]:
    """The accounts still held (and still active), leased for another `lease_seconds`."""
    rows = await session.execute(
        text(
            "UPDATE mailbox_leases AS l SET expires_at = now() + make_interval(secs => :ttl)"
            " FROM mailbox_accounts AS a"
            " WHERE l.account_id = a.id AND a.active AND l.holder = :holder AND l.account_id = ANY(:ids)"
            " RETURNING l.account_id"
        ),
        {"holder": holder, "ttl": lease_seconds, "ids": account_ids},
    )
    return {row.account_id for row in rows}


async def release(session: AsyncSession, holder: str, account_ids: list[uuid.UUID] | None = None) -> None:
    """Give accounts back at once (all of them, and the heartbeat, when `account_ids` is None)."""
    if account_ids is None:
        await session.execute(text("DELETE FROM mailbox_leases WHERE holder = :holder"), {"holder": holder})
        await session.execute(text("DELETE FROM mailbox_readers WHERE holder = :holder"), {"holder": holder})
        return
    await session.execute(
        text("DELETE FROM mailbox_leases WHERE holder = :holder AND account_id = ANY(:ids)"),
        {"holder": holder, "ids": account_ids},
    )


# Checkpoints


async def checkpoint(session: AsyncSession, account_id: uuid.UUID, folder: str) -> tuple[int, int] | None:
    """(UIDVALIDITY, last UID processed) of a folder, or None for a folder never read."""
    row = (
        await session.execute(
            text(
                "SELECT uidvalidity, last_uid FROM mailbox_checkpoints WHERE account_id = :a AND folder = :f"
            ),
            {"a": account_id, "f": folder},
        )
    ).first()
    return None if row is None else (int(row.uidvalidity), int(row.last_uid))


async def start_checkpoint(session: AsyncSession, place: Place) -> None:
    """Read the folder from after `place.uid` in `place.uidvalidity`: a new folder, or one whose UIDVALIDITY
    changed (its mails are read again from the start; those processed before are known by their keys)."""
    await session.execute(
        text(
            "INSERT INTO mailbox_checkpoints (account_id, folder, uidvalidity, last_uid)"
            " VALUES (:a, :f, :v, :u) ON CONFLICT (account_id, folder) DO UPDATE"
            " SET uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, updated_at = now()"
        ),
        {"a": place.account_id, "f": place.folder, "v": place.uidvalidity, "u": place.uid},
    )


async def advance(session: AsyncSession, place: Place) -> None:
    """The folder is read up to `place.uid` (never back, never across a UIDVALIDITY)."""
    await session.execute(
        text(
            "UPDATE mailbox_checkpoints SET last_uid = greatest(last_uid, :u), updated_at = now()"
            " WHERE account_id = :a AND folder = :f AND uidvalidity = :v"
        ),
        {"a": place.account_id, "f": place.folder, "v": place.uidvalidity, "u": place.uid},
    )


# Processed mails: a mail is matched at most once, by its place and by its key.


async def claim_mails(
    session: AsyncSession, places: Sequence[Place], mail_keys: Sequence[str]
) -> dict[int, int]:
    """The rows that make this transaction the one processing each mail, by UID; a mail without one was
    processed before, or earlier in the same run under the same key (or is being processed by a transaction
    that will commit first: this one waits for it). One folder's mails, in UID order: two readers claiming
    the same run take the rows in the same order, and never deadlock."""
    if not places:
        return {}
    account_id, folder, uidvalidity = places[0].account_id, places[0].folder, places[0].uidvalidity
    rows = await session.execute(
        text(
            "INSERT INTO mailbox_mails (account_id, folder, uidvalidity, uid, mail_key, outcome)"
            " SELECT CAST(:a AS uuid), CAST(:f AS text), CAST(:v AS bigint), m.uid, m.mail_key, 'processing'"
            " FROM unnest(CAST(:uids AS bigint[]), CAST(:keys AS text[])) WITH ORDINALITY"
            " AS m (uid, mail_key, n)"
            " ORDER BY m.n ON CONFLICT DO NOTHING RETURNING uid, id"
        ),
        {
            "a": account_id,
            "f": folder,
            "v": uidvalidity,
            "uids": [p.uid for p in places],
            "keys": list(mail_keys),
        },
    )
    return {row.uid: row.id for row in rows}


async def settle_mails(session: AsyncSession, settled: Sequence[Settled]) -> None:
    """What each claimed mail came to."""
    if not settled:
        return
    await session.execute(
        text(
            "UPDATE mailbox_mails AS m SET outcome = s.outcome, message_id = s.message_id, reason = s.reason"
            " FROM unnest(CAST(:ids AS bigint[]), CAST(:outcomes AS text[]), CAST(:messages AS uuid[]),"
            " CAST(:reasons AS text[])) AS s (id, outcome, message_id, reason) WHERE m.id = s.id"
        ),
        {
            "ids": [row for row, *_ in settled],
            "outcomes": [outcome for _, outcome, _, _ in settled],
            "messages": [message for _, _, message, _ in settled],
            "reasons": [reason[:1000] if reason else None for *_, reason in settled],
        },
    )


# The account's health, for the api


async def connected(session: AsyncSession, account_id: uuid.UUID, idle_supported: bool) -> None:
    await session.execute(
        text(
            "UPDATE mailbox_accounts SET failures = 0, last_success_at = now(), idle_supported = :idle"
            " WHERE id = :a"
        ),
        {"a": account_id, "idle": idle_supported},
    )


async def failed(session: AsyncSession, account_id: uuid.UUID, error: str) -> int:
    """One more failure in a row; how many now."""
    failures: Any = (
        await session.execute(
            text(
                "UPDATE mailbox_accounts SET failures = failures + 1, last_error = :e, last_error_at = now()"
                " WHERE id = :a RETURNING failures"
            ),
            {"a": account_id, "e": error[:1000]},
        )
    ).scalar()
    return int(failures or 0)
