"""One account's life in a reader process: connect, catch up every folder from its checkpoint, then IDLE
(where the server offers it) or poll, for as long as this process holds the account's lease. A failure to
connect, log in or read backs off per account (`policy.backoff`) and is recorded on the account; nothing
else stops. A server or network that drops the connection (during IDLE too) is a failure like any other:
the next connection catches up from the checkpoints."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracker.inbox import policy, store
from services.tracker.inbox.processing import Mail, MailProcessor, Processed
from services.tracker.inbox.store import Account, Place
from shared import crypto
from shared.imap import FAILING_AFTER
from shared.imap import client as imap
from shared.imap.responses import FolderState, Unexpected
from shared.oauth_tokens import NeedsReauth, TokenSource, TokenUnavailable
from shared.settings import Settings

log = structlog.get_logger()


# How long a cancelled task may take to end before it is cancelled again.
RECANCEL_SECONDS = 1.0


async def stop(*tasks: asyncio.Task[object]) -> None:
    """Cancel the tasks and wait until they have ended, however they end (the caller reads how). A cancel can
    be lost (on Python 3.11 `asyncio.wait_for`, around every aioimaplib command, returns an answer that comes
    with the cancel and drops the cancel), and a reading task that IDLEd on kept a reader from stopping on
    SIGTERM: so a task still running is cancelled again."""
    for task in tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
        if not task.cancelled():
            task.exception()  # retrieved: its failure is the caller's to report, not asyncio's to log


class MailboxReader:
    def __init__(
        self,
        account_id: uuid.UUID,
        sessions: async_sessionmaker[AsyncSession],
        processor: MailProcessor,
        settings: Settings,
        clock: Callable[[], datetime],
        tokens: TokenSource,
    ) -> None:
        self.account_id = account_id
        self._tokens = tokens
        self._sessions = sessions
        self._processor = processor
        self._settings = settings
        self._clock = clock
        self._failures = 0  # in a row, as last recorded

    async def run(self) -> None:
        """Until cancelled (its lease lost or given back, or the process stopping)."""
        while True:
            try:
                async with self._sessions() as session:
                    account = await store.account(session, self.account_id)
                if account is None:  # deleted or deactivated: its lease is not renewed, so this task ends
                    await asyncio.sleep(self._settings.inbox_lease_seconds)
                    continue
                await self._session(account)
            except (imap.ImapFailure, Unexpected) as error:
                await self._failed(str(error))
            except Exception as error:  # the library's, the network's, the database's: this account's alone
                log.exception("tracker.inbox.read.failed", account_id=str(self.account_id))
                await self._failed(f"reading the mailbox failed ({type(error).__name__})")

    async def _failed(self, error: str) -> None:
        """Recorded on the account, then a wait before the next try; should the database be away too, the
        waits grow from the failures counted here."""
        try:
            async with self._sessions() as session, session.begin():
                self._failures = await store.failed(session, self.account_id, error)
        except Exception:  # the database away: the reading goes on being tried all the same
            log.exception("tracker.inbox.failure.unrecorded", account_id=str(self.account_id))
            self._failures += 1
        delay = policy.backoff(self._failures, self._settings.inbox_backoff_seconds)
        log.warning(
            "tracker.inbox.connect.failed", account_id=str(self.account_id), error=error,
            failures=self._failures, retry_in=delay, failing=self._failures >= FAILING_AFTER,
        )  # fmt: skip
        await asyncio.sleep(delay)

    async def _endpoint(self, account: Account, rejected: str | None = None) -> imap.Endpoint:
        """How to log in: with the domain's OAuth2 grant when it has one (its token refreshed when due, or
        when `rejected`), else with the mailbox's password."""
        try:
            access = await self._tokens.access(account.sending_domain_id, rejected)
        except (NeedsReauth, TokenUnavailable) as error:
            raise imap.ImapFailure(f"OAuth2: {error}") from error
        if access is not None:
            login, oauth2 = (access.email, access.token), True
        elif account.password_encrypted is not None:
            password = crypto.decrypt(self._settings.encryption_key, account.password_encrypted)
            login, oauth2 = (account.username, password), False
        else:
            raise imap.ImapFailure("the mailbox has no password, and its domain no OAuth2 grant")
        return imap.Endpoint(
            host=account.host,
            port=account.port,
            security=account.security,  # type: ignore[arg-type]  # the table's check constraint
            username=login[0],
            password=login[1],
            timeout=self._settings.inbox_timeout_seconds,
            allow_private=self._settings.private_hosts_allowed,
            ca_file=self._settings.imap_ca_file,
            oauth2=oauth2,
        )

    async def _session(self, account: Account) -> None:
        """A session; a refused OAuth2 token gets one forced refresh and one retry, and a second refusal
        pauses the domain (`needs_reauth`)."""
        endpoint = await self._endpoint(account)
        try:
            await self._session_with(account, endpoint)
        except imap.TokenRefused:
            endpoint = await self._endpoint(account, rejected=endpoint.password)
            try:
                await self._session_with(account, endpoint)
            except imap.TokenRefused as error:
                await self._tokens.refuse(account.sending_domain_id, str(error))
                raise

    async def _session_with(self, account: Account, endpoint: imap.Endpoint) -> None:
        async with imap.connect(endpoint) as mailbox:
            async with self._sessions() as session, session.begin():
                await store.connected(session, account.id, mailbox.idle_supported)
            self._failures = 0
            log.info("tracker.inbox.connect.ok", account_id=str(account.id), idle=mailbox.idle_supported)
            reading = asyncio.create_task(self._read(account, mailbox))
            lost = asyncio.create_task(mailbox.lost.wait())
            try:
                await asyncio.wait({reading, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await stop(reading, lost)
            if not reading.cancelled() and reading.exception() is not None:
                raise reading.exception()  # type: ignore[misc]
            raise imap.ConnectionLost("the IMAP server closed the connection")

    async def _read(self, account: Account, mailbox: imap.Mailbox) -> None:
        settings = self._settings
        while True:
            for folder in account.folders:
                await self._catch_up(account, mailbox, folder)
            first = account.folders[0]
            if not mailbox.idle_supported:
                await asyncio.sleep(settings.inbox_poll_seconds)
                continue
            # IDLE watches one folder: the first (INBOX by default); others are read at least every poll.
            seconds = (
                settings.inbox_idle_seconds if len(account.folders) == 1 else settings.inbox_poll_seconds
            )
            if await self._nothing_new(account, mailbox, first):
                await mailbox.idle(seconds)

    async def _nothing_new(self, account: Account, mailbox: imap.Mailbox, folder: str) -> bool:
        """Select the folder to IDLE in; False when a mail came meanwhile (read it first)."""
        state = await mailbox.select(folder)
        async with self._sessions() as session:
            seen = await store.checkpoint(session, account.id, folder)
        return seen is not None and seen[0] == state.uidvalidity and (state.uidnext or 0) <= seen[1] + 1

    async def _catch_up(self, account: Account, mailbox: imap.Mailbox, folder: str) -> None:
        state = await mailbox.select(folder)
        async with self._sessions() as session, session.begin():
            seen = await store.checkpoint(session, account.id, folder)
            if seen is None or seen[0] != state.uidvalidity:
                start = await self._start(account, mailbox, state) if seen is None else 0
                if seen is not None:
                    log.warning(
                        "tracker.inbox.uidvalidity.changed", account_id=str(account.id), folder=folder,
                        before=seen[0], now=state.uidvalidity,
                    )  # fmt: skip
                await store.start_checkpoint(session, Place(account.id, folder, state.uidvalidity, start))
                seen = (state.uidvalidity, start)
        last_uid = seen[1]
        if state.uidnext is not None and state.uidnext <= last_uid + 1:
            return
        uids = await mailbox.uids_after(last_uid)
        folder_place = Place(account.id, folder, state.uidvalidity, last_uid)
        # The next run is fetched and read while this one is recorded.
        ready: asyncio.Queue[list[Mail] | None] = asyncio.Queue(maxsize=1)
        fetching = asyncio.create_task(self._fetch(mailbox, folder_place, uids, ready))
        try:
            while (mails := await self._next(ready, fetching)) is not None:
                done = await self._processor.record(account, mails)
                await self._move_reports(account, mailbox, mails, done)
        finally:
            await stop(fetching)

    @staticmethod
    async def _next(
        ready: asyncio.Queue[list[Mail] | None], fetching: asyncio.Task[None]
    ) -> list[Mail] | None:
        """The next run read, or None after the last; the fetching task's failure is raised here."""
        taking = asyncio.ensure_future(ready.get())
        try:
            await asyncio.wait({taking, fetching}, return_when=asyncio.FIRST_COMPLETED)
            if not taking.done() and fetching.done():
                fetching.result()  # raises its failure; ended well, it has put its last run for `taking`
            return await taking
        finally:
            await stop(taking)

    async def _fetch(
        self, mailbox: imap.Mailbox, place: Place, uids: list[int], ready: asyncio.Queue[list[Mail] | None]
    ) -> None:
        """Runs of mails (`policy.runs`), each fetched in one command and read within the process's budget
        of held mail, onto `ready`; None after the last."""
        settings = self._settings
        for start in range(0, len(uids), settings.inbox_batch):
            batch = uids[start : start + settings.inbox_batch]
            sizes = await mailbox.sizes(batch)
            wanted = {uid: size for uid, size in sizes.items() if size <= settings.inbound_max_bytes}
            for run in policy.runs(batch, wanted, settings.inbox_batch, settings.inbox_batch_bytes):
                fetched = [uid for uid in run if uid in wanted]
                async with self._processor.budget.hold(sum(wanted[uid] for uid in fetched)):
                    bodies = await mailbox.bodies(fetched) if fetched else {}
                    mails = await self._processor.read(place, run, sizes, bodies)
                    del bodies  # read: the budget is given back with the bodies
                await ready.put(mails)
        await ready.put(None)

    async def _move_reports(
        self, account: Account, mailbox: imap.Mailbox, mails: list[Mail], done: list[Processed]
    ) -> None:
        if not account.reports_folder:
            return
        for mail, processed in zip(mails, done, strict=True):
            if processed.is_report and account.reports_folder != mail.place.folder:
                try:
                    await mailbox.move(mail.place.uid, account.reports_folder)
                except imap.ImapFailure as error:  # the report counted; leaving it where it is harms nobody
                    log.warning("tracker.inbox.move.failed", account_id=str(account.id), error=str(error))

    async def _start(self, account: Account, mailbox: imap.Mailbox, state: FolderState) -> int:
        """The last UID to count as read in a new folder: its mail of the last days is read. (A folder whose
        UIDVALIDITY changed is read again from the start: processed mails are known by their keys.)"""
        since = await mailbox.uids_since(
            policy.first_day(account.created_at, self._settings.inbox_lookback_days)
        )
        if since:
            return since[0] - 1
        return state.uidnext - 1 if state.uidnext else 0
