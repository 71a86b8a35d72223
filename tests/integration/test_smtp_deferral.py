"""A receiving server that asks us to slow down, at each step of the SMTP conversation: the adapter answers a
deferral (421, or 4.7.x), with the server's own words, never a bounce or a generic connection failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage

import pytest

from services.sender.outcome import Kind, Outcome
from services.sender.smtp import Account, SmtpPool

pytestmark = pytest.mark.integration

Script = Callable[[int], dict[str, str]]  # the connection's number (from 1) → reply by step, asked each step


@contextlib.asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[int]:
    """A minimal SMTP server answering each step (greeting, EHLO, MAIL, RCPT, DATA, ".") as `script` says for
    that connection, 250 (354 for DATA, 220 for the greeting) where it says nothing; a 421 closes."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        number = connections

        async def answer(step: str, default: str) -> bool:
            reply = script(number).get(step, default)
            writer.write(f"{reply}\r\n".encode())
            await writer.drain()
            return not reply.startswith("421")

        try:
            if not await answer("greeting", "220 mx.example ESMTP"):
                return
            while line := await reader.readline():
                step = line.decode().split(" ", 1)[0].split(":", 1)[0].strip().upper()
                if step == "QUIT":
                    await answer("QUIT", "221 bye")
                    return
                if not await answer(step, "354 go on" if step == "DATA" else "250 OK"):
                    return
                if step == "DATA":
                    await reader.readuntil(b"\r\n.\r\n")
                    if not await answer(".", "250 2.0.0 queued"):
                        return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def attempt(pool: SmtpPool, port: int) -> Outcome:
    email = EmailMessage()
    email["From"], email["To"], email["Subject"] = "sales@acme.example", "jan@lead.example", "Hello"
    email.set_content("Hi Jan")
    transaction = pool.transaction(Account("127.0.0.1", port, None, None, "none"))
    refused = await transaction.begin("bounce+1@acme.example")
    return refused or await transaction.finish("jan@lead.example", email.as_bytes())


@pytest.mark.parametrize(
    ("step", "reply"),
    [
        ("greeting", "421 4.7.0 Too many connections from your host, come back later"),
        ("EHLO", "421 4.7.0 Too many connections from your host, come back later"),
        ("MAIL", "451 4.7.1 Rate limited, slow down"),
        ("RCPT", "450 4.7.1 Recipient rate limit exceeded"),
        ("DATA", "421 4.7.28 Unusual rate of unsolicited mail, try again later"),
        (".", "421 4.7.0 Try again later, closing connection"),
    ],
)
async def test_a_server_that_says_slow_down_at_any_step_defers_the_message(step: str, reply: str) -> None:
    pool = SmtpPool(timeout=2.0, allow_private=True)
    try:
        async with scripted_server(lambda _: {step: reply}) as port:
            outcome = await attempt(pool, port)
    finally:
        await pool.close()
    assert outcome.kind is Kind.DEFERRED
    assert outcome.reason == reply  # the server's own words, also for a 421 greeting
    assert outcome.smtp_code == int(reply[:3])


async def test_a_421_on_a_reused_session_is_the_server_closing_it_and_a_fresh_one_sends() -> None:
    pool = SmtpPool(timeout=2.0, allow_private=True)
    # The first session closes with a 421 at its second MAIL FROM (an idle timeout); the second takes mail.
    mails = 0

    def script(connection: int) -> dict[str, str]:
        return {"MAIL": "421 4.4.2 Idle timeout, closing"} if connection == 1 and mails else {}

    try:
        async with scripted_server(script) as port:
            assert (await attempt(pool, port)).kind is Kind.SENT
            mails += 1
            assert (await attempt(pool, port)).kind is Kind.SENT
        assert pool.opened == 2
    finally:
        await pool.close()
