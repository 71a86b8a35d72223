"""A mailbox's mails, from their bytes to what they caused, each exactly once.

A run of mails (`policy.runs`) is fetched in one command, held within the process's budget of bodies
(`Budget`) until read, a few at once, by the tracker's reader processes (`MailReaders`, the code behind
`POST /inbound/*`); then classified (`inbound.kind_of`) and matched: by In-Reply-To/References to our
Message-ID, then VERP, then the original inside a report (`inbound.named_in_order`), then, for replies only,
the lead's address writing to the sending mailbox after our last mail to it. What the run's mails cause
(`returns.py`), their processed-mail rows and their folder's checkpoint are one transaction: a mail processed
before (found by its place or its key) changes nothing, and a reader killed at any point leaves either all of
it or none. Should that transaction fail, each mail is recorded in a transaction of its own, and one that
still fails is skipped with the reason: one bad mail fails alone, and the checkpoint advances past it. A mail
that cannot be read is skipped with its reason, and its checkpoint advances all the same."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from shared.db import is_transient
from shared.settings import Settings

log = structlog.get_logger()
MAILS = Counter("maildash_inbox_mails_total", "Mails read from sending mailboxes, by outcome", ["outcome"])
# Outcomes whose mail may go to the account's reports folder: machine reports, never a person's mail.
REPORTS = frozenset({"hard_bounce", "soft_bounce", "complaint"})
# Kinds that may be matched by their sender alone: a person's or a machine's answer.
ANSWERS = ("reply", "auto_reply")


@dataclass(frozen=True)
class Processed:
    outcome: str  # returns' outcome, or unrelated, skipped, duplicate
    message_id: uuid.UUID | None = None
    reason: str | None = None

    @property
    def is_report(self) -> bool:
        return self.outcome in REPORTS


@dataclass(frozen=True)
class Mail:
    """A mail read (or skipped, with the reason), ready to be recorded."""

    place: Place
    key: str
    reading: inbound.Reading | None
    reason: str | None = None


@dataclass(frozen=True)
class Candidates:
    """What the mails of a run could be matched to at all, asked once for the run."""

    messages: dict[uuid.UUID | str, Any]  # by message id and by Message-ID
    writers: set[str]  # addresses of leads the sending domain has sent mail to


def mail_key(reading: inbound.Reading | None, raw: bytes) -> str:
    """What identifies a mail whatever its place: its Message-ID, else a digest of its bytes."""
    if reading is not None and reading.mail_id:
        return reading.mail_id[:500]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def place_key(place: Place) -> str:
    """What identifies a mail never fetched."""
    return f"place:{place.folder}:{place.uidvalidity}:{place.uid}"


class Budget:
    """Bytes of mail the reader process holds at once, fetched and not yet read, whatever the accounts: a
    mailbox waits for its share before it fetches."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._free = total
        self._freed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(size, self._total)  # a mail larger than the budget waits for all of it
        while self._free < size:
            self._freed.clear()
            await self._freed.wait()
        self._free -= size
        try:
            yield
        finally:
            self._free += size
            self._freed.set()


class MailProcessor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        readers: MailReaders,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        self._sessions = sessions
        self._readers = readers
        self._secret = settings.tracking_secret
        self._clock = clock
        self._limit = settings.inbound_max_bytes
        self._parallel = settings.inbox_parallel_reads
        self.budget = Budget(settings.inbox_held_bytes)

    async def read(
        self, place: Place, uids: list[int], sizes: dict[int, int], bodies: dict[int, bytes]
    ) -> list[Mail]:
        """Each mail of a run (`place` is the folder's; `sizes` has the UIDs the server still knew, `bodies`
        those it sent), read by the reader processes, `inbox_parallel_reads` at once. The accounts
        share the reader processes, whose queue refuses what it cannot hold (as it should for
        `POST /inbound/*`): here a mail waits for its turn instead, or a busy reader process would count as
        the mailbox failing; the budget bounds the mails waiting."""
        turns = asyncio.Semaphore(self._parallel)

        async def one(uid: int) -> Mail:
            here = dataclasses.replace(place, uid=uid)
            size, raw = sizes.get(uid), bodies.get(uid)
            if size is not None and size > self._limit:
                return Mail(here, place_key(here), None, f"larger than {self._limit} bytes ({size})")
            if raw is None:  # expunged since the search
                return Mail(here, place_key(here), None, "gone before it was fetched")
            async with turns:
                try:
                    reading = await self._readers.read(raw, None, waits=True)
                except inbound.NotUnderstood as why:  # OverLimit included
                    return Mail(here, mail_key(None, raw), None, str(why))
            return Mail(here, mail_key(reading, raw), reading)

        return list(await asyncio.gather(*(one(uid) for uid in uids)))

    async def record(self, account: Account, mails: list[Mail]) -> list[Processed]:
        """The run's mails in one transaction; should it fail, each in one of its own."""
        try:
            async with self._sessions() as session, session.begin():
                done = await self._record(session, account, mails)
        except Exception as error:
            if is_transient(error):  # the database away: the account backs off and reads the run again
                raise
            log.warning(
                "tracker.inbox.run.failed", account_id=str(account.id), mails=len(mails),
                error=str(error)[:300] or type(error).__name__,
            )  # fmt: skip
            done = [(await self._alone(account, mail))[0] for mail in mails]
        for mail, processed in zip(mails, done, strict=True):
            MAILS.labels(processed.outcome).inc()
            logged = log.warning if processed.outcome == "skipped" else log.info
            logged(
                f"tracker.inbox.mail.{processed.outcome}", account_id=str(account.id),
                folder=mail.place.folder, uid=mail.place.uid, reason=processed.reason,
                message_id=str(processed.message_id) if processed.message_id else None,
            )  # fmt: skip
        return done

    async def _alone(self, account: Account, mail: Mail) -> list[Processed]:
        """One mail in a transaction of its own; one that fails even so is skipped with the reason."""
        try:
            async with self._sessions() as session, session.begin():
                return await self._record(session, account, [mail])
        except Exception as error:
            if is_transient(error):
                raise
            log.exception("tracker.inbox.mail.unrecorded", account_id=str(account.id), uid=mail.place.uid)
            # Known by its place alone: its key may be what failed.
            failed = Mail(
                mail.place, place_key(mail.place), None, f"recording it failed ({type(error).__name__})"
            )
            async with self._sessions() as session, session.begin():
                return await self._record(session, account, [failed])

    async def _record(self, session: AsyncSession, account: Account, mails: list[Mail]) -> list[Processed]:
        rows = await store.claim_mails(session, [m.place for m in mails], [m.key for m in mails])
        readings = [m.reading for m in mails if m.place.uid in rows and m.reading is not None]
        candidates = await self._candidates(session, account, readings)
        done, settled = [], []
        for mail in mails:
            row = rows.get(mail.place.uid)
            if row is None:
                processed = Processed("duplicate")
            elif mail.reading is None:
                processed = Processed("skipped", reason=mail.reason)
            else:
                processed = await self._apply(session, account, mail.reading, candidates)
            if row is not None:
                settled.append((row, processed.outcome, processed.message_id, processed.reason))
            done.append(processed)
        await store.settle_mails(session, settled)
        await store.advance(session, mails[-1].place)
        return done

    async def _candidates(
        self, session: AsyncSession, account: Account, readings: list[inbound.Reading]
    ) -> Candidates:
        names = {name for reading in readings for name in inbound.named_in_order(reading)}
        writers = {r.sender_address for r in readings if r.sender_address and inbound.kind_of(r) in ANSWERS}
        return Candidates(
            await repo.messages_named(session, names, account.workspace_id),
            await repo.written_to(session, account.workspace_id, account.sending_domain_id, writers),
        )

    async def _apply(
        self, session: AsyncSession, account: Account, reading: inbound.Reading, candidates: Candidates
    ) -> Processed:
        kind = inbound.kind_of(reading)
        now = self._clock()
        if kind == "unrelated":
            return Processed("unrelated", reason="a report that is no bounce or complaint")
        if reading.sender_address == account.from_email and kind in ANSWERS:
            return Processed("unrelated", reason="written by the mailbox itself")
        if kind == "unsubscribe":
            return await self._unsubscribe(session, reading)
        message = inbound.first_named(inbound.named_in_order(reading), candidates.messages)
        if message is None and kind in ANSWERS and reading.sender_address in candidates.writers:
            message = await repo.last_message_to(
                session, account.workspace_id, account.sending_domain_id, reading.sender_address, now
            )
        if message is None:
            return Processed("unrelated", reason="it names no message sent from here")
        outcome, _ = await self._record_outcome(session, message, kind, reading, now)
        return Processed(outcome, message.id)

    async def _record_outcome(
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
