"""Tracker use cases: record what a valid token proves, and nothing for anything else."""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracker import repository as repo
from services.tracker.machine import is_machine_open
from shared import tokens
from shared.clock import Clock
from shared.events import LeadUnsubscribed
from shared.messaging import enqueue
from shared.planning.window import Window
from shared.settings import Settings

log = structlog.get_logger()


class Tracker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
        self._sessions = sessions
        self._secret = settings.tracking_secret
        self._clock = clock

    def unsubscribe_target(self, token: str) -> uuid.UUID | None:
        """The message an unsubscribe token names, or None for a forged or malformed one."""
        message = tokens.message_of(self._secret, "unsubscribe", token)
        return uuid.UUID(message) if message else None

    async def unsubscribe(self, message_id: uuid.UUID) -> None:
        """RFC 8058 one-click: takes effect at once; repeating it changes nothing."""
        async with self._sessions() as session, session.begin():
            done = await repo.unsubscribe(session, message_id)
            if done is not None:
                workspace_id, lead_id = done
                await enqueue(
                    session,
                    LeadUnsubscribed(workspace_id=workspace_id, lead_id=lead_id, message_id=message_id),
                )
        if done is not None:
            log.info("tracker.unsubscribe.done", message_id=str(message_id))

    async def follow_click(self, message: str, url: str, token: str, user_agent: str) -> bool:
        """True (and the click recorded) only when the token signs exactly this message and this URL."""
        if not tokens.verify_message(self._secret, "click", token, message, url):
            return False
        async with self._sessions() as session, session.begin():
            await repo.record_click(
                session, uuid.UUID(message), self._clock(), {"url": url, "user_agent": user_agent[:500]}
            )
        return True

    async def record_open(self, message: str, token: str, user_agent: str, ip: str | None) -> bool:
        """True when the hit was recorded (a genuine token for a sent message)."""
        if not tokens.verify_message(self._secret, "open", token, message):
            return False
        message_id = uuid.UUID(message)  # a genuine token only ever names a real message id
        now = self._clock()
        async with self._sessions() as session, session.begin():
            row = await repo.message_for_open(session, message_id)
            if row is None:
                return False
            machine = is_machine_open(user_agent, ip, row.sent_at, now)
            day = Window.from_dict(row.window).local_date(now)
            data = {"user_agent": user_agent[:500], "ip": ip}
            await repo.record_open(session, row, now, day, machine, data)
        return True
