"""Development SMTP sink: accepts every e-mail and keeps it as an .eml file (and in memory, for tests).

`python -m tools.smtp_sink --port 1025 --dir var/mail`. Not part of the product: it never relays anything.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)


@dataclass
class AnswerFrom:
    """From the `nth` mail on (1 = the first), answer `reply` at `phase` (RCPT or DATA) instead of taking the
    mail: a server that starts refusing or deferring after a while (e.g. "550 5.7.1 Message refused as spam",
    "421 4.7.0 Try again later"). Only mails to a recipient `to` accepts count and are answered."""

    nth: int
    reply: str
    phase: Literal["rcpt", "data"] = "data"
    to: Callable[[str], bool] = lambda _: True
    seen: int = 0

    def answer(self, phase: str, recipients: list[str]) -> str | None:
        if phase != self.phase or not any(self.to(recipient) for recipient in recipients):
            return None
        self.seen += 1
        return self.reply if self.seen >= self.nth else None


@dataclass
class SinkHandler:
    directory: Path | None = None
    received: list[Received] = field(default_factory=list)
    # Tests set this to answer with an SMTP error instead of 250 (e.g. "550 5.1.1 no such user"),
    # for everyone or (reply_to) for one recipient.
    reply: str = "250 2.0.0 OK: queued"
    reply_to: dict[str, str] = field(default_factory=dict)
    # Tests set this (or call `answer_from`) to answer every mail from the Nth on with a reply of theirs.
    answers_from: AnswerFrom | None = None
    # Tests set this to hold the DATA phase open, like a slow mail server.
    data_delay: float = 0.0
    data_started: int = 0
    mail_from_times: list[float] = field(default_factory=list)  # time.monotonic() of each MAIL FROM
    # The MAIL FROMs whose transaction went on to DATA: e-mails put on the wire, not a client that vanished
    # between MAIL FROM and DATA.
    sends: list[tuple[float, str]] = field(default_factory=list)
    _mail_from_at: dict[Session, float] = field(default_factory=dict)  # the open transaction's MAIL FROM
    # Tests set this to act while a DATA phase is open (kill the client, say); a reply it returns is answered
    # instead, and the e-mail is then not kept.
    on_data: Callable[[Session], Awaitable[str | None]] | None = None
    # Tests set this to answer EHLO slowly, like a server doing reverse-DNS and reputation checks.
    ehlo_delay: float = 0.0
    ehlo_started: int = 0
    # (time.time(), address) of each MAIL FROM: comparable with the wall-clock times services record.
    mail_from_wall: list[tuple[float, str]] = field(default_factory=list)

    def answer_from(self, nth: int, reply: str, phase: Literal["rcpt", "data"] = "data") -> None:
        self.answers_from = AnswerFrom(nth, reply, phase)

    def _answer(self, phase: str, recipients: list[str]) -> str | None:
        return None if self.answers_from is None else self.answers_from.answer(phase, recipients)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.ehlo_started += 1
        if self.ehlo_delay:
            await asyncio.sleep(self.ehlo_delay)
        session.host_name = hostname
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        now = time.monotonic()
        self.mail_from_times.append(now)
        self.mail_from_wall.append((time.time(), address))
        self._mail_from_at[session] = now
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if (answer := self._answer("rcpt", [address])) is not None:
            return answer
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_started += 1
        self.sends.append((self._mail_from_at.pop(session), str(envelope.mail_from)))
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.on_data is not None and (instead := await self.on_data(session)):
            return instead
        if (answer := self._answer("data", envelope.rcpt_tos)) is not None:
            return answer
        reply = next((self.reply_to[r] for r in envelope.rcpt_tos if r in self.reply_to), self.reply)
        if not reply.startswith("250"):
            return reply
        content = envelope.original_content or b""
        mail = Received(str(envelope.mail_from), list(envelope.rcpt_tos), content)
        self.received.append(mail)
        if self.directory is not None:
            name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
            (self.directory / name).write_bytes(mail.data)
        return reply


def start(
    host: str, port: int, directory: Path | None = None, **kwargs: Any
) -> tuple[Controller, SinkHandler]:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    handler = SinkHandler(directory)
    controller = Controller(handler, hostname=host, port=port, **kwargs)
    controller.start()
    return controller, handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    parser.add_argument("--discard", action="store_true", help="write no files (for benchmarks)")
    args = parser.parse_args()
    controller, _ = start(args.host, args.port, None if args.discard else args.dir)
    kept = "discarding mail" if args.discard else f"keeping mail in {args.dir}/"
    print(f"smtp sink on {args.host}:{args.port}, {kept}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
