"""The SMTP adapter: one delivery attempt with aiosmtplib, in two steps, answered as an `Outcome`.

`begin` opens the session up to an accepted MAIL FROM; `finish` sends RCPT and DATA. The sender commits its
claim between the two: a pause that returns has seen every transaction that began, and no DATA is ever sent
for a message that is not recorded as `sending`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from services.sender.outcome import Outcome, from_reply, from_transport_error


@dataclass(frozen=True)
class Account:
    host: str
    port: int
    username: str | None
    password: str | None
    security: str  # none | starttls | tls


def _outcome(error: Exception) -> Outcome:
    if isinstance(error, aiosmtplib.SMTPResponseException):  # includes a refused recipient
        return from_reply(error.code, error.message)
    return from_transport_error(f"{type(error).__name__}: {error}")


FAILURES = (aiosmtplib.SMTPException, OSError, TimeoutError)


class SmtpTransaction:
    def __init__(self, account: Account, timeout: float) -> None:
        self._client = aiosmtplib.SMTP(
            hostname=account.host,
            port=account.port,
            username=account.username,
            password=account.password,
            use_tls=account.security == "tls",
            start_tls=account.security == "starttls",
            timeout=timeout,
        )

    async def begin(self, sender: str) -> Outcome | None:
        """Connect, secure, log in and send MAIL FROM. None when the server accepted; else why not."""
        try:
            await self._client.connect()
            await self._client.mail(sender)
        except FAILURES as error:
            await self.close()
            return _outcome(error)
        return None

    async def finish(self, recipient: str, email: EmailMessage) -> Outcome:
        try:
            await self._client.rcpt(recipient)
            reply = await self._client.data(email.as_bytes())
        except FAILURES as error:
            return _outcome(error)
        finally:
            await self.close()
        return from_reply(reply.code, reply.message)

    async def close(self) -> None:
        with contextlib.suppress(*FAILURES):
            if self._client.is_connected:
                await self._client.quit()
        self._client.close()
