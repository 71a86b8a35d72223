"""The SMTP adapter: one delivery attempt with aiosmtplib, in two steps, answered as an `Outcome`.

`begin` brings a session up to an accepted MAIL FROM; `finish` sends RCPT and DATA. The sender commits its
claim between the two: a pause that returns has seen every transaction that began, and no DATA is ever sent
for a message that is not recorded as `sending`.

Connections are reused per account: after an accepted message the session goes back to an idle pool, and
the next message of that account skips connect, TLS and login.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass

import aiosmtplib

from services.sender.outcome import Outcome, from_reply, from_transport_error


@dataclass(frozen=True)
class Account:
    host: str
    port: int
    username: str | None
    password: str | None
    security: str  # none | starttls | tls


def _outcome(error: Exception, for_recipient: bool) -> Outcome:
    if isinstance(error, aiosmtplib.SMTPResponseException):  # includes a refused recipient
        return from_reply(error.code, error.message, for_recipient)
    return from_transport_error(f"{type(error).__name__}: {error}")


FAILURES = (aiosmtplib.SMTPException, OSError, TimeoutError)
# A pooled session the server has dropped since: nothing was sent on it, so a fresh one may be opened.
GONE = (aiosmtplib.SMTPServerDisconnected, ConnectionError)


async def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(*FAILURES):
        if client.is_connected:
            await client.quit()
    client.close()


class SmtpPool:
    """Idle sessions per account. Servers drop idle clients after a few minutes (RFC 5321 §4.5.3.2 asks
    them to wait 5), so a session idle longer than `idle_seconds` is closed rather than reused."""

    def __init__(self, timeout: float, ca_file: str | None = None, idle_seconds: float = 30.0) -> None:
        self._timeout = timeout
        self._ca_file = ca_file
        self._idle_seconds = idle_seconds
        self._idle: defaultdict[Account, list[tuple[float, aiosmtplib.SMTP]]] = defaultdict(list)
        self.opened = 0  # sessions connected so far: what reuse saves, for the metrics and tests

    def transaction(self, account: Account) -> SmtpTransaction:
        return SmtpTransaction(self, account)

    def new_session(self, account: Account) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=account.host,
            port=account.port,
            username=account.username,
            password=account.password,
            use_tls=account.security == "tls",
            start_tls=account.security == "starttls",
            cert_bundle=self._ca_file,
            timeout=self._timeout,
        )

    async def idle_session(self, account: Account) -> aiosmtplib.SMTP | None:
        idle = self._idle[account]
        while idle:
            since, client = idle.pop()
            if client.is_connected and time.monotonic() - since < self._idle_seconds:
                return client
            await _close(client)
        return None

    def keep(self, account: Account, client: aiosmtplib.SMTP) -> None:
        self._idle[account].append((time.monotonic(), client))

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                await _close(idle.pop()[1])


class SmtpTransaction:
    def __init__(self, pool: SmtpPool, account: Account) -> None:
        self._pool = pool
        self._account = account
        self._client: aiosmtplib.SMTP | None = None

    async def begin(self, sender: str) -> Outcome | None:
        """Take or open a session and send MAIL FROM. None when the server accepted; else why not."""
        if (pooled := await self._pool.idle_session(self._account)) is not None:
            try:
                await pooled.mail(sender)
            except GONE:
                await _close(pooled)
            except FAILURES as error:
                await _close(pooled)
                return _outcome(error, for_recipient=False)
            else:
                self._client = pooled
                return None
        client = self._pool.new_session(self._account)
        try:
            await client.connect()
            self._pool.opened += 1
            await client.mail(sender)
        except FAILURES as error:
            await _close(client)
            return _outcome(error, for_recipient=False)
        self._client = client
        return None

    async def finish(self, recipient: str, email: bytes) -> Outcome:
        assert self._client is not None, "finish() follows a begin() that succeeded"
        client, self._client = self._client, None
        try:
            await client.rcpt(recipient)
            reply = await client.data(email)
        except FAILURES as error:
            await _close(client)
            return _outcome(error, for_recipient=True)
        if client.is_connected:
            self._pool.keep(self._account, client)
        return from_reply(reply.code, reply.message)

    async def abandon(self) -> None:
        """Close a session whose claim could not be committed: its MAIL FROM leads nowhere."""
        if self._client is not None:
            await _close(self._client)
            self._client = None
