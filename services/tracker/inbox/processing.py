"""One mail of a mailbox, from its bytes to what it caused, exactly once.

The mail is read by the tracker's reader processes (`MailReaders`, the code behind `POST /inbound/*`),
classified (`inbound.kind_of`) and matched: by In-Reply-To/References to our Message-ID, then VERP, then the
original inside a report (`inbound.named_in_order`), then, for replies only, the lead's address writing to
the sending mailbox after our last mail to it. Its effect (`returns.py`), its processed-mail row and its
folder's checkpoint are one transaction: a mail processed before (found by its place or its key) changes
nothing, and a reader killed at any point leaves either all of it or none. A mail that cannot be read is
skipped with its reason, and its checkpoint advances all the same."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracker import inbound, returns
from services.tracker import repository as repo
from services.tracker.inbox import store
from services.tracker.inbox.store import Account, Place
from services.tracker.readers import MailReaders
from shared import tokens

log = structlog.get_logger()
MAILS = Counter("maildash_inbox_mails_total", "Mails read from sending mailboxes, by outcome", ["outcome"])
# Outcomes whose mail may go to the account's reports folder: machine reports, never a person's mail.
REPORTS = frozenset({"hard_bounce", "soft_bounce", "complaint"})


@dataclass(frozen=True)
class Processed:
    outcome: str  # returns' outcome, or unrelated, skipped, duplicate
    message_id: uuid.UUID | None = None
    reason: str | None = None

    @property
    def is_report(self) -> bool:
        return self.outcome in REPORTS


def mail_key(reading: inbound.Reading | None, raw: bytes) -> str:
    """What identifies a mail whatever its place: its Message-ID, else a digest of its bytes."""
    if reading is not None and reading.mail_id:
        return reading.mail_id[:500]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class MailProcessor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        readers: MailReaders,
        tracking_secret: str,
        clock: Callable[[], datetime],
        turns: int,
    ) -> None:
        self._sessions = sessions
        self._readers = readers
        self._secret = tracking_secret
        self._clock = clock
        # The accounts share the reader processes, whose queue refuses what it cannot hold (as it should for
        # `POST /inbound/*`): here an account waits for its turn instead, or a busy reader process would be
        # counted as the mailbox failing. `turns` is what the pool takes without refusing.
        self._turns = asyncio.Semaphore(turns)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Held while one mail is fetched and processed: taken before its body is fetched, so an account
        waiting for its turn holds no mail in memory."""
        async with self._turns:
            yield

    async def skip(self, account: Account, place: Place, key: str, reason: str) -> Processed:
        """A mail not even fetched (too large): recorded as skipped, its checkpoint advanced."""
        return await self._commit(account, place, key, None, reason)

    async def process(self, account: Account, place: Place, raw: bytes) -> Processed:
        reading, reason = None, None
        try:
            reading = await self._readers.read(raw, None)
        except inbound.NotUnderstood as why:  # OverLimit included
            reason = str(why)
        return await self._commit(account, place, mail_key(reading, raw), reading, reason)

    async def _commit(
        self, account: Account, place: Place, key: str, reading: inbound.Reading | None, reason: str | None
    ) -> Processed:
        async with self._sessions() as session, session.begin():
            row = await store.claim_mail(session, place, key)
            if row is None:
                done = Processed("duplicate")
            else:
                if reading is None:
                    done = Processed("skipped", reason=reason)
                else:
                    done = await self._apply(session, account, reading)
                await store.settle_mail(session, row, done.outcome, done.message_id, done.reason)
            await store.advance(session, place)
        MAILS.labels(done.outcome).inc()
        logged = log.warning if done.outcome == "skipped" else log.info
        logged(
            f"tracker.inbox.mail.{done.outcome}", account_id=str(account.id), folder=place.folder,
            uid=place.uid, message_id=str(done.message_id) if done.message_id else None, reason=done.reason,
        )  # fmt: skip
        return done

    async def _apply(self, session: AsyncSession, account: Account, reading: inbound.Reading) -> Processed:
        kind = inbound.kind_of(reading)
        now = self._clock()
        if kind == "unrelated":
            return Processed("unrelated", reason="a report that is no bounce or complaint")
        if reading.sender_address == account.from_email and kind in ("reply", "auto_reply"):
            return Processed("unrelated", reason="written by the mailbox itself")
        if kind == "unsubscribe":
            return await self._unsubscribe(session, reading)
        message = await repo.message_in_order(session, inbound.named_in_order(reading), account.workspace_id)
        if message is None and kind in ("reply", "auto_reply") and reading.sender_address:
            message = await repo.last_message_to(
                session, account.workspace_id, account.sending_domain_id, reading.sender_address, now
            )
        if message is None:
            return Processed("unrelated", reason="it names no message sent from here")
        outcome, _ = await self._record(session, message, kind, reading, now)
        return Processed(outcome, message.id)

    async def _record(
        self, session: AsyncSession, message: Any, kind: inbound.Kind, reading: inbound.Reading, now: datetime
    ) -> tuple[str, bool]:
        if kind == "complaint":
            return await returns.complaint(
                session, message, reading.feedback_type, reading.sender, self._clock
            )
        if reading.failure is not None:
            return await returns.bounce(session, message, reading.failure, self._clock)
        reply = inbound.Reply(reading.references, None, reading.sender, kind == "auto_reply")
        return await returns.answer(session, message, reply, now, "mailbox")

    async def _unsubscribe(self, session: AsyncSession, reading: inbound.Reading) -> Processed:
        assert reading.unsubscribe_token is not None
        target = tokens.message_of(self._secret, "unsubscribe", reading.unsubscribe_token)
        if target is None:
            return Processed("unrelated", reason="its unsubscribe address is not one of ours")
        await repo.unsubscribe(session, uuid.UUID(target))
        return Processed("unsubscribed", uuid.UUID(target))
