"""The connection to one mailbox, over aioimaplib: thin, every decision about the answers is in
`responses.py`. The host is resolved and judged by the public-address rule at every connection, and the
connection goes to the address judged (TLS still checks the host name). Mail is fetched with BODY.PEEK[],
which leaves `\\Seen` as it was: the user's mailbox stays the user's."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import aioimaplib

from shared import oauth
from shared.imap import responses
from shared.public_address import UnusableHost, resolve_public

# A peer that never becomes an IMAP session is reported as one reason, so `last_error` cannot scan ports.
NO_SESSION = "the IMAP server could not be reached (connection, TLS or greeting failed)"
# Except an untrusted certificate: only the tenant can fix it (a certificate a public CA signed, or the CA
# in MAILDASH_IMAP_CA_FILE), and to be told means only that a TLS server answered where they said one would.
UNTRUSTED = "the IMAP server's TLS certificate is not trusted ({})"


class ImapFailure(Exception):
    """The mailbox cannot be read now; the text says why, in words fit for the tenant."""


class ConnectionLost(ImapFailure):
    pass


class TokenRefused(ImapFailure):
    """The server refused our OAuth2 access token (`AUTHENTICATIONFAILED`)."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    security: Literal["tls", "starttls", "none"]
    username: str
    password: str  # with `oauth2`, the OAuth2 access token of `username`
    timeout: float
    allow_private: bool
    ca_file: str | None = None
    # Log in with the domain's OAuth2 grant (SASL OAUTHBEARER where offered, else XOAUTH2), not a password.
    oauth2: bool = False

    def __repr__(self) -> str:  # never a password or token in a log line
        return f"Endpoint({self.host!r}, {self.port}, {self.username!r}, oauth2={self.oauth2})"


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ok(response: Any, what: str) -> list[Any]:
    if response.result != "OK":
        text = b" ".join(bytes(line) for line in response.lines[-1:]).decode("utf-8", "replace")[:300]
        raise ImapFailure(f"{what} refused: {text}")
    return list(response.lines)


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]  # untyped library
    """aioimaplib's protocol, with SASL bearer-token logins (it has XOAUTH2 only, and no way to end a refused
    exchange)."""

    async def authenticate_bearer(self, chosen: oauth.Mechanism, initial: str) -> Any:
        async with self.state_condition:
            command = aioimaplib.Command(
                "AUTHENTICATE", self.new_tag(), chosen.value, initial, loop=self.loop
            )
            response = await self.execute(command, scrub=initial)
            if response.result == "OK":
                self.state = aioimaplib.AUTH
            self.state_condition.notify_all()
            return response

    def _continuation(self, line: bytes) -> None:
        """A SASL server that refuses a token first sends its error as a challenge and waits for our answer
        before the tagged NO (Google, Microsoft and Dovecot do): answered here, else the login would wait for
        its timeout. aioimaplib knows continuations only for APPEND and IDLE."""
        command = self.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            acknowledgement = oauth.ERROR_ACKNOWLEDGEMENT[oauth.Mechanism(command.args[0])]
            self.transport.write(acknowledgement.encode() + b"\r\n")
            return
        super()._continuation(line)


class _Client(aioimaplib.IMAP4):  # type: ignore[misc]  # untyped library
    """aioimaplib's client, connecting to the judged address while TLS checks the host name."""

    def __init__(
        self,
        address: str,
        endpoint: Endpoint,
        context: ssl.SSLContext | None,
        lost: Callable[[Exception | None], None],
    ) -> None:
        self._server_hostname = endpoint.host if context else None
        super().__init__(
            address, endpoint.port, timeout=endpoint.timeout, conn_lost_cb=lost, ssl_context=context
        )

    def create_client(
        self, host: str, port: int, loop: asyncio.AbstractEventLoop | None, conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:  # fmt: skip
        local_loop = loop or asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(
                lambda: self.protocol, host, port, ssl=ssl_context, server_hostname=self._server_hostname
            )
        )


class Mailbox:
    """A logged-in session. `lost` is set when the server or the network drops it. FETCH and MOVE may be
    called from two tasks at once; the other commands only while neither runs."""

    def __init__(self, client: _Client, lost: asyncio.Event) -> None:
        self._client = client
        self.lost = lost
        # The reader fetches the next mails while it moves the reports it has recorded: one command at a time.
        self._commands = asyncio.Lock()

    @property
    def idle_supported(self) -> bool:
        return bool(self._client.has_capability("IDLE"))

    async def folders(self) -> list[str]:
        return responses.folder_names(_ok(await self._client.list('""', "*"), "LIST"))

    async def select(self, folder: str) -> responses.FolderState:
        return responses.folder_state(_ok(await self._client.select(_quoted(folder)), f"SELECT {folder}"))

    async def uids_after(self, last_uid: int) -> list[int]:
        lines = _ok(await self._client.uid_search(f"UID {last_uid + 1}:*", charset=None), "UID SEARCH")
        return responses.searched_uids(lines, after=last_uid)

    async def uids_since(self, day: date) -> list[int]:
        lines = _ok(await self._client.uid_search(f"SINCE {day:%d-%b-%Y}", charset=None), "UID SEARCH")
        return responses.searched_uids(lines)

    async def sizes(self, uids: list[int]) -> dict[int, int]:
        wanted = ",".join(map(str, uids))
        async with self._commands:
            fetched = await self._client.uid("fetch", wanted, "(UID RFC822.SIZE)")
        return responses.fetched_sizes(_ok(fetched, "FETCH"))

    async def bodies(self, uids: list[int]) -> dict[int, bytes]:
        """The mails' bytes by UID, in one command, without setting `\\Seen` (one missing was expunged)."""
        wanted = ",".join(map(str, uids))
        async with self._commands:
            fetched = await self._client.uid("fetch", wanted, "(UID BODY.PEEK[])")
        return responses.fetched_bodies(_ok(fetched, "FETCH"))

    async def move(self, uid: int, folder: str) -> None:
        async with self._commands:
            await self._move(uid, folder)

    async def _move(self, uid: int, folder: str) -> None:
        if self._client.has_capability("MOVE"):
            _ok(await self._client.uid("move", str(uid), _quoted(folder)), "MOVE")
            return
        _ok(await self._client.uid("copy", str(uid), _quoted(folder)), "COPY")
        _ok(await self._client.uid("store", str(uid), "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
        if self._client.has_capability("UIDPLUS"):
            _ok(await self._client.uid("expunge", str(uid)), "EXPUNGE")

    async def idle(self, seconds: float) -> bool:
        """IDLE in the selected folder until the server reports a change or `seconds` pass. True: a change."""
        idling = await self._client.idle_start(timeout=seconds)
        changed = False
        try:
            while self._client.has_pending_idle():
                pushed = await self._client.wait_server_push(timeout=seconds + self._client.timeout)
                if pushed == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                if any(b"EXISTS" in bytes(line) for line in pushed):
                    changed = True
                    break
        finally:
            if self._client.has_pending_idle():
                self._client.idle_done()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idling, self._client.timeout)
        return changed


async def _starttls(client: _Client, context: ssl.SSLContext, host: str) -> None:
    """aioimaplib has no STARTTLS: the command, then TLS on the same transport, then the capabilities again
    (RFC 3501 §6.2.1: those before TLS are void)."""
    if not client.has_capability("STARTTLS"):
        raise ImapFailure("the IMAP server does not offer STARTTLS")
    protocol = client.protocol
    _ok(
        await protocol.execute(aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)),
        "STARTTLS",
    )
    loop = asyncio.get_running_loop()
    protocol.transport = await loop.start_tls(protocol.transport, protocol, context, server_hostname=host)
    await protocol.capability()


def _context(endpoint: Endpoint) -> ssl.SSLContext | None:
    if endpoint.security == "none":
        return None
    return ssl.create_default_context(cafile=endpoint.ca_file)


@contextlib.asynccontextmanager
async def connect(endpoint: Endpoint) -> AsyncIterator[Mailbox]:
    """A logged-in session with the mailbox; raises ImapFailure (or UnusableHost's text as one)."""
    try:
        addresses = await resolve_public(
            endpoint.host, endpoint.port, allow_private=endpoint.allow_private, timeout=endpoint.timeout
        )
    except UnusableHost as error:
        raise ImapFailure(f"IMAP host {error}") from error
    lost = asyncio.Event()
    context = _context(endpoint)
    client = _Client(
        addresses[0], endpoint, context if endpoint.security == "tls" else None, lambda _: lost.set()
    )
    try:
        try:
            await client.wait_hello_from_server()
            if endpoint.security == "starttls":
                assert context is not None
                await asyncio.wait_for(_starttls(client, context, endpoint.host), endpoint.timeout)
        except ssl.SSLCertVerificationError as error:
            raise ImapFailure(UNTRUSTED.format(error.verify_message)) from error
        except (OSError, TimeoutError, ssl.SSLError, aioimaplib.AioImapException) as error:
            raise ImapFailure(NO_SESSION) from error
        if endpoint.oauth2:
            offered = [c.removeprefix("AUTH=") for c in client.protocol.capabilities if c.startswith("AUTH=")]
            chosen = oauth.mechanism(offered)
            initial = oauth.initial_response(
                chosen, endpoint.username, endpoint.host, endpoint.port, endpoint.password
            )
            login = client.protocol.authenticate_bearer(chosen, initial)
            answer = await asyncio.wait_for(login, endpoint.timeout)
            if answer.result != "OK":  # as aioimaplib's own
                said = " ".join(_text(line) for line in answer.lines)[:200]
                if "AUTHENTICATIONFAILED" not in said.upper():  # a passing trouble, not the token's
                    raise ImapFailure(f"the IMAP server did not take the OAuth2 login: {said}")
                raise TokenRefused(f"the IMAP server refused the OAuth2 token of {endpoint.username}")
        elif (await client.login(endpoint.username, endpoint.password)).result != "OK":
            raise ImapFailure("the IMAP server refused the user name or password")
        yield Mailbox(client, lost)
    finally:
        if not lost.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.logout(), 2)
        if client.protocol.transport is not None:
            client.protocol.transport.close()


def _text(line: bytes | str) -> str:
    return line.decode(errors="replace") if isinstance(line, bytes) else line
