"""All SQL of the sending domains' OAuth2 grants for the workers (`shared/oauth_tokens.py`): read one, lock it
for a refresh, keep new tokens, and mark it `needs_reauth` with its domain paused. Statements run on a
`message_store.Db` (an asyncpg connection, or a session through `on_session`)."""

# ruff: noqa: S608 -- the statements are written from our own declarations, never from input
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from shared.clock import Clock
from shared.db import domain_health
from shared.db.message_store import Db
from shared.oauth import AccountState
from shared.reputation import Cause, Verdict

_COLUMNS = """a.id, a.workspace_id, a.sending_domain_id, a.provider, a.email, a.refresh_token_encrypted,
  a.access_token_encrypted, a.access_expires_at, a.state, d.domain"""
READ = f"""
SELECT {_COLUMNS} FROM oauth_accounts AS a JOIN sending_domains AS d ON d.id = a.sending_domain_id
WHERE a.sending_domain_id = $1
"""
# One refresh at a time per grant, across processes: the refresher holds its row until it has kept the new
# tokens, and whoever waited reads them instead of refreshing again.
LOCK = READ + " FOR UPDATE OF a"
KEEP = """
UPDATE oauth_accounts SET access_token_encrypted = $2, access_expires_at = $3,
  refresh_token_encrypted = coalesce($4, refresh_token_encrypted), refreshed_at = $5, last_error = NULL,
  updated_at = $5
WHERE id = $1
"""
NEEDS_REAUTH = f"""
UPDATE oauth_accounts SET state = '{AccountState.NEEDS_REAUTH}', access_token_encrypted = NULL,
  access_expires_at = NULL, updated_at = $3,
  -- the provider's own reason stays: a later message that finds the grant refused says less
  last_error = CASE WHEN state = '{AccountState.NEEDS_REAUTH}' THEN last_error ELSE $2 END
WHERE id = $1
"""


@dataclass(frozen=True)
class Grant:
    id: uuid.UUID
    workspace_id: uuid.UUID
    sending_domain_id: uuid.UUID
    domain: str
    provider: str
    email: str
    refresh_token_encrypted: str
    access_token_encrypted: str | None
    access_expires_at: datetime | None
    state: AccountState


async def read(db: Db, domain_id: uuid.UUID, *, lock: bool = False) -> Grant | None:
    """The domain's grant (None: it has none); `lock`: held until the caller's transaction ends."""
    rows = await db.fetch(LOCK if lock else READ, domain_id)
    if not rows:
        return None
    row = rows[0]
    return Grant(
        row["id"], row["workspace_id"], row["sending_domain_id"], row["domain"], row["provider"],
        row["email"],
        row["refresh_token_encrypted"], row["access_token_encrypted"], row["access_expires_at"],
        AccountState(row["state"]),
    )  # fmt: skip


async def keep(
    db: Db,
    grant: Grant,
    access_encrypted: str,
    expires_at: datetime,
    refresh_encrypted: str | None,
    now: datetime,
) -> None:
    await db.fetch(KEEP, grant.id, access_encrypted, expires_at, refresh_encrypted, now)


async def needs_reauth(db: Db, grant: Grant, reason: str, clock: Clock) -> bool:
    """The grant is refused for good: marked so, and its domain paused (cause `needs_reauth`, `DomainPaused`
    in the outbox) until a person connects again. Its messages stay planned. False: the domain was paused
    already (for this or another cause)."""
    await db.fetch(NEEDS_REAUTH, grant.id, reason[:1000], clock())
    verdict = Verdict(
        Cause.NEEDS_REAUTH,
        f"the OAuth2 grant of {grant.email} was refused ({reason[:300]}): connect the mailbox again",
    )
    return await domain_health.pause(
        db, grant.sending_domain_id, grant.workspace_id, grant.domain, verdict, clock
    )
