"""Which accounts this reader process reads. Every third of a lease it renews its leases (an account it
lost is stopped at once), says it is alive, and takes its fair share of the accounts no live reader holds
(`policy.fair_share`), giving back any beyond it. A dead reader's leases expire after `inbox_lease_seconds`
and the others take its accounts over. Correctness does not rest on the lease: a mail is processed once by
its processed-mail row (`processing.py`); the lease keeps two readers from doing the work twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracker.inbox import policy, store
from shared.db import is_transient

log = structlog.get_logger()


class Leases:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        lease_seconds: float,
        max_accounts: int,
        start: Callable[[uuid.UUID], asyncio.Task[None]],
    ) -> None:
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._sessions = sessions
        self._seconds = lease_seconds
        self._max = max_accounts
        self._start = start
        self.running: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.tick()
                except Exception as error:  # the database away: the leases expire, the others take over
                    if not is_transient(error):
                        raise
                    log.warning("tracker.inbox.lease.failed", error=str(error) or type(error).__name__)
                await asyncio.sleep(self._seconds / 3)
        finally:
            await self._stop(list(self.running))
            with contextlib.suppress(Exception):
                async with self._sessions() as session, session.begin():
                    await store.release(session, self.holder)

    async def tick(self) -> None:
        async with self._sessions() as session, session.begin():
            held = await store.renew(session, self.holder, list(self.running), self._seconds)
            accounts, readers = await store.heartbeat(session, self.holder, self._seconds)
        lost = [account for account in self.running if account not in held]
        if lost:
            log.warning("tracker.inbox.lease.lost", accounts=[str(a) for a in lost])
            await self._stop(lost)
        share = policy.fair_share(accounts, readers, self._max)
        if len(self.running) > share:
            extra = sorted(self.running)[share:]
            await self._stop(extra)
            async with self._sessions() as session, session.begin():
                await store.release(session, self.holder, extra)
            log.info("tracker.inbox.lease.released", accounts=len(extra), share=share)
        elif len(self.running) < share:
            async with self._sessions() as session, session.begin():
                claimed = await store.claim(session, self.holder, share - len(self.running), self._seconds)
            for account in claimed:
                self.running[account] = self._start(account)
            if claimed:
                log.info("tracker.inbox.lease.claimed", accounts=len(claimed), share=share, readers=readers)

    async def _stop(self, accounts: list[uuid.UUID]) -> None:
        tasks = [self.running.pop(account) for account in accounts if account in self.running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
