"""The SMTP adapter: one delivery attempt with aiosmtplib, in two steps, answered as an `Outcome`.

`begin` brings a session up to an accepted MAIL FROM; `finish` sends RCPT and DATA. The sender commits its
claim between the two: a pause that returns has seen every transaction that began, and no DATA is ever sent
for a message that is not recorded as `sending`.

Connections are reused per account: after an accepted message the session goes back to an idle pool, and
the next message of that account skips connect, TLS and login.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import aiosmtplib
import structlog

from services.sender.outcome import Kind, Outcome, from_login_refusal, from_reply, from_transport_error
from shared import oauth
from shared.public_address import NotPublic, Resolver, UnusableHost, resolve_public, system_resolver

log = structlog.get_logger()


@dataclass(frozen=True)
class Account:
    host: str
    port: int
    username: str | None
    password: str | None
    security: str  # none | starttls | tls
    # With it, `username` logs in with SASL XOAUTH2 and this OAuth2 access token instead of a password. Not
    # part of the pool's key: a session logged in with the token before the last refresh is still good. The
    # grant's domain is: a session logged in with one workspace's grant serves no other domain, whatever its
    # host and username.
    token: str | None = field(default=None, compare=False)
    grant: uuid.UUID | None = None

    def __repr__(self) -> str:  # never a password or token in a log line
        return f"Account({self.host!r}, {self.port}, {self.username!r}, xoauth2={self.token is not None})"


class NoSmtpServer(Exception):
    """The peer never became an SMTP session (refused, reset, timed out, a failed TLS handshake, no 220
    greeting, no 250 to EHLO or HELO). Why is not told: a tenant could otherwise scan ports through us. A 421
    instead of the greeting or to EHLO is the exception: an SMTP server asking us to come back later, whose
    answer is a deferral."""

    def __init__(self) -> None:
        super().__init__(
            "could not reach an SMTP server (connection refused, timed out, or not an SMTP server)"
        )


def _outcome(error: Exception, for_recipient: bool) -> Outcome:
    if isinstance(error, NotPublic):  # the host points inside: a retry would meet the same rule
        return Outcome(Kind.FAILED, f"SMTP host {error}", retryable=False)
    if isinstance(error, UnusableHost):
        return from_transport_error(f"SMTP host {error}")
    if isinstance(error, NoSmtpServer):
        return from_transport_error(str(error))
    if isinstance(error, aiosmtplib.SMTPAuthenticationError):
        return from_login_refusal(error.code, error.message)
    if isinstance(error, aiosmtplib.SMTPResponseException):  # includes a refused recipient
        return from_reply(error.code, error.message, for_recipient)
    return from_transport_error(f"{type(error).__name__}: {error}")


FAILURES = (aiosmtplib.SMTPException, OSError, TimeoutError, UnusableHost, NoSmtpServer)
# A pooled session the server has dropped since: nothing was sent on it, so a fresh one may be opened.
GONE = (aiosmtplib.SMTPServerDisconnected, ConnectionError)


def _closing(error: BaseException) -> bool:
    """A 421 reply: the server is there and closes the session, "come back later" (a deferral)."""
    return isinstance(error, aiosmtplib.SMTPResponseException) and error.code == 421


def _gone(error: BaseException) -> bool:
    """A pooled session the server dropped since (it may say so with a 421 to our next command)."""
    return isinstance(error, GONE) or _closing(error)


async def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(*FAILURES):
        if client.is_connected:
            await client.quit()
    client.close()


async def _socket_to(addresses: list[str], port: int) -> socket.socket:
    """A TCP connection to the first of the judged `addresses` that takes one, in the resolver's order."""
    loop = asyncio.get_running_loop()
    failure: OSError = OSError("no address to connect to")
    for address in addresses:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (address, port))
        except BaseException as error:  # also a cancellation (the caller's timeout): never leak the socket
            sock.close()
            if not isinstance(error, OSError):
                raise
            failure = error
        else:
            return sock
    raise failure


class SmtpPool:
    """Idle sessions per account. Servers drop idle clients after a few minutes (RFC 5321 §4.5.3.2 asks
    them to wait 5), so a session idle longer than `idle_seconds` is closed rather than reused.

    Every new session resolves the host again, judges its addresses with the public-address rule (unless
    `allow_private`) and connects to a judged address, while TLS still checks the certificate against the host
    name: a name that points inside since the domain was saved (DNS rebinding) is refused here."""

    def __init__(
        self,
        timeout: float,
        ca_file: str | None = None,
        idle_seconds: float = 30.0,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._timeout = timeout
        self._ca_file = ca_file
        self._idle_seconds = idle_seconds
        self._allow_private = allow_private
        self._resolver = resolver
        self._idle: defaultdict[Account, list[tuple[float, aiosmtplib.SMTP]]] = defaultdict(list)
        self.opened = 0  # sessions connected so far: what reuse saves, for the metrics and tests

    def transaction(self, account: Account) -> SmtpTransaction:
        return SmtpTransaction(self, account)

    async def new_session(self, account: Account) -> aiosmtplib.SMTP:
        """A session that has greeted, said EHLO, and done STARTTLS and login where the account asks.
        Raises `UnusableHost`, `NoSmtpServer`, or the real server's refusal (STARTTLS, login)."""
        addresses = await resolve_public(
            account.host,
            account.port,
            allow_private=self._allow_private,
            timeout=self._timeout,
            resolver=self._resolver,
        )
        client = aiosmtplib.SMTP(
            hostname=account.host,  # what TLS checks the certificate against
            use_tls=account.security == "tls",
            start_tls=False,
            cert_bundle=self._ca_file,
            timeout=self._timeout,
        )
        sock = None
        try:
            sock = await asyncio.wait_for(_socket_to(addresses, account.port), self._timeout)
            await client.connect(sock=sock)
            await _greet(client)
        except FAILURES as error:
            client.close()
            if sock is not None:
                sock.close()
            if _closing(error):  # an SMTP server greeting (or answering EHLO) with 421: its real reply
                raise
            log.info("sender.smtp.unreachable", host=account.host, port=account.port, error=repr(error))
            raise NoSmtpServer from error
        try:
            if account.security == "starttls":
                await client.starttls()
            if account.token is not None:
                await _bearer_login(client, account)
            elif account.username is not None:
                await client.login(account.username, account.password or "")
        except FAILURES:
            await _close(client)
            raise
        self.opened += 1
        return client

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


async def _bearer_login(client: aiosmtplib.SMTP, account: Account) -> None:
    """AUTH with the OAuth2 access token: OAUTHBEARER where the server offers it, else XOAUTH2. A refusal
    comes first as an error challenge (334), acknowledged so that the server gives its final reply."""
    assert account.username is not None, "an OAuth2 login names its address"
    assert account.token is not None, "an OAuth2 login has its token"
    chosen = oauth.mechanism(client.server_auth_methods)
    initial = oauth.initial_response(chosen, account.username, account.host, account.port, account.token)
    reply = await client.execute_command(b"AUTH", chosen.value.encode(), initial.encode())
    if reply.code == 334:
        reply = await client.execute_command(oauth.ERROR_ACKNOWLEDGEMENT[chosen].encode())
    if reply.code != 235:
        raise aiosmtplib.SMTPAuthenticationError(reply.code, reply.message)


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO for a server without ESMTP: the step that shows the peer is an SMTP server."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError as error:
        if _closing(error):
            raise
        await client.helo()


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
            except FAILURES as error:
                await _close(pooled)
                if not _gone(error):
                    return _outcome(error, for_recipient=False)
            else:
                self._client = pooled
                return None
        try:
            client = await self._pool.new_session(self._account)
        except FAILURES as error:
            return _outcome(error, for_recipient=False)
        try:
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
