"""Tracker use cases: record what a valid token proves, and nothing for anything else."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracker import inbound, returns
from services.tracker import repository as repo
from services.tracker.esp.intake import EspWebhooks
from services.tracker.opens import Hit, OpenRecorder
from services.tracker.readers import MailReaders
from shared import tokens
from shared.clock import Clock
from shared.settings import Settings

log = structlog.get_logger()


class Tracker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
        self._sessions = sessions
        self._secret = settings.tracking_secret
        self._clock = clock
        self.opens = OpenRecorder(settings.database_url)
        self.readers = MailReaders(settings)
        self.esp = EspWebhooks(sessions, settings, clock)

    def unsubscribe_target(self, token: str) -> uuid.UUID | None:
        """The message an unsubscribe token names, or None for a forged or malformed one."""
        message = tokens.message_of(self._secret, "unsubscribe", token)
        return uuid.UUID(message) if message else None

    async def unsubscribe(self, message_id: uuid.UUID) -> None:
        """RFC 8058 one-click: takes effect at once; repeating it changes nothing."""
        async with self._sessions() as session, session.begin():
            done = await repo.unsubscribe(session, message_id)
        if done is not None:
            log.info("tracker.unsubscribe.done", message_id=str(message_id))

    async def bounce(self, raw: bytes, recipient: str | None) -> dict[str, Any]:
        """A DSN bounces its message (`returns.bounce`); an ARF feedback report is a complaint. Raises
        NotUnderstood."""
        reading = await self.readers.read(raw, recipient)
        complained = inbound.kind_of(reading) == "complaint"
        found = None if complained else inbound.bounce_of(reading)
        async with self._sessions() as session, session.begin():
            if complained:
                message = await repo.message_in_order(session, inbound.named_in_order(reading))
            else:
                assert found is not None
                message = await repo.message_named(session, found.message_id, found.original_ids)
            if message is None:
                raise inbound.NotUnderstood("it names no message sent from here")
            if found is None:
                outcome, recorded = await returns.complaint(
                    session, message, reading.feedback_type, reading.sender, self._clock
                )
            else:
                outcome, recorded = await returns.bounce(session, message, found, self._clock)
        log.info("tracker.bounce", message_id=str(message.id), outcome=outcome, recorded=recorded)
        return {"message_id": str(message.id), "outcome": outcome, "recorded": recorded}

    async def reply(self, raw: bytes, recipient: str | None) -> dict[str, Any]:
        """A reply stops the lead's follow-ups; an automatic one (out of office) is only recorded; a mail to
        the List-Unsubscribe address unsubscribes. Raises NotUnderstood."""
        found = inbound.reply_of(await self.readers.read(raw, recipient))
        if found.unsubscribe_token is not None:
            target = self.unsubscribe_target(found.unsubscribe_token)
            if target is None:
                raise inbound.NotUnderstood("its unsubscribe address is not one of ours")
            await self.unsubscribe(target)
            return {"message_id": str(target), "outcome": "unsubscribed", "recorded": True}
        now = self._clock()
        async with self._sessions() as session, session.begin():
            message = await repo.message_named(session, None, found.references)
            if message is None:
                raise inbound.NotUnderstood("it answers no message sent from here")
            outcome, recorded = await returns.answer(session, message, found, now, "inbound")
        log.info("tracker.reply", message_id=str(message.id), outcome=outcome, recorded=recorded)
        return {"message_id": str(message.id), "outcome": outcome, "recorded": recorded}

    async def follow_click(self, message: str, url: str, token: str, user_agent: str) -> bool:
        """True (and the click recorded) only when the token signs exactly this message and this URL."""
        if not tokens.verify_message(self._secret, "click", token, message, url):
            return False
        async with self._sessions() as session, session.begin():
            await repo.record_click(
                session, uuid.UUID(message), self._clock(), {"url": url, "user_agent": user_agent[:500]}
            )
        return True

    async def record_open(self, message: str, token: str, user_agent: str, ip: str | None) -> None:
        """A genuine token's hit returns once its batch is committed; anything else records nothing."""
        if tokens.verify_message(self._secret, "open", token, message):
            # A genuine token only ever names a real message id.
            await self.opens.record(Hit(uuid.UUID(message), self._clock(), user_agent, ip))
