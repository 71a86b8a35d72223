"""What returning mail does, whichever way it came (`POST /inbound/*` or a sending mailbox): the effect of
each kind on the message it names, in the caller's transaction, through the transitions of
`shared.db.message_store`. The caller has read the mail (`inbound.read_mail`, in a reader process) and found
the message."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.tracker import repository as repo
from services.tracker.inbound import Bounce, Failure, Reading, Reply
from shared.clock import Clock
from shared.planning.window import Window
from shared.reputation import Signal

Source = Literal["inbound", "mailbox"]


async def bounce(
    session: AsyncSession, message: Any, found: Bounce | Failure, clock: Clock
) -> tuple[str, bool]:
    """5.x.x is a hard bounce (message bounced, lead bounced and suppressed, its pending mail cancelled,
    counted towards its sending domain's health), 4.x.x a soft one (recorded; the remote server keeps trying).
    The outcome, and whether it was recorded."""
    now = clock()
    data = {"status": found.status, "recipient": found.recipient, "diagnostic": found.diagnostic, "dsn": True}
    if not found.permanent:
        await repo.record_event(session, message, "soft_bounced", now, data)
        return "soft_bounce", True
    reason = f"{found.status or 'hard bounce'} {found.diagnostic}".strip()
    day = Window.from_dict(message.window).local_date(now)
    recorded = await repo.record_hard_bounce(session, message, now, day, reason, data, found.status)
    if recorded:
        await repo.count_for_domain(session, message, Signal.DSN_BOUNCE, now, clock)
    return "hard_bounce", recorded


async def complaint(session: AsyncSession, message: Any, reading: Reading, clock: Clock) -> tuple[str, bool]:
    """The lead reported the message as spam: complained, suppressed, its pending mail cancelled, counted
    towards its sending domain's health (once)."""
    now = clock()
    data = {"feedback_type": reading.feedback_type, "from": reading.sender[:320]}
    recorded = await repo.record_complaint(session, message, now, data)
    if recorded:
        await repo.count_for_domain(session, message, Signal.COMPLAINT, now, clock)
    return "complaint", recorded


async def answer(
    session: AsyncSession, message: Any, found: Reply, now: datetime, source: Source
) -> tuple[str, bool]:
    """A person's reply stops the lead's follow-ups; an automatic one (out of office) is only recorded."""
    data = {"from": found.sender[:320], "automatic": found.automatic, "source": source}
    if found.automatic:
        await repo.record_event(session, message, "auto_replied", now, data)
        return "automatic_reply", True
    return "replied", await repo.record_reply(session, message, now, data, source)
