"""The SMTP adapter: one delivery attempt with aiosmtplib, answered as an `Outcome`."""

from __future__ import annotations

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


async def deliver(
    account: Account, email: EmailMessage, sender: str, recipient: str, timeout: float
) -> Outcome:
    try:
        _, reply = await aiosmtplib.send(
            email,
            sender=sender,
            recipients=[recipient],
            hostname=account.host,
            port=account.port,
            username=account.username,
            password=account.password,
            use_tls=account.security == "tls",
            start_tls=account.security == "starttls",
            timeout=timeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as error:
        refused = error.recipients[0]
        return from_reply(refused.code, refused.message)
    except aiosmtplib.SMTPResponseException as error:
        return from_reply(error.code, error.message)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        return from_transport_error(f"{type(error).__name__}: {error}")
    return from_reply(250, reply)
