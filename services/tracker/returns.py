"""What returning mail does, whichever way it came (`POST /inbound/*`, a sending mailbox, an ESP's webhook):
the effect of each kind on the message it names, in the caller's transaction, through the transitions of
`shared.db.message_store`. The caller has read the mail (`inbound.read_mail`, in a reader process) or the
ESP's event (`services.tracker.esp`) and found the message."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.tracker import repository as repo
from services.tracker.esp.common import Reported
from services.tracker.inbound import Bounce, Failure, Reply
from shared.clock import Clock
from shared.planning.window import Window
from shared.reputation import Signal

Source = Literal["inbound", "mailbox"]
# What a record says about where it came from, besides what it says about the mail or event.
DSN: Mapping[str, Any] = MappingProxyType({"dsn": True})
MAIL: Mapping[str, Any] = MappingProxyType({})


async def bounce(
    session: AsyncSession,
    message: Any,
    found: Bounce | Failure,
    clock: Clock,
    origin: Mapping[str, Any] = DSN,
) -> tuple[str, bool]:
    """5.x.x is a hard bounce (message bounced, lead bounced and suppressed, its pending mail cancelled,
    counted towards its sending domain's health), 4.x.x a soft one (recorded; the remote server keeps trying).
    The outcome, and whether it was recorded."""
    now = clock()
    data = {"status": found.status, "recipient": found.recipient, "diagnostic": found.diagnostic, **origin}
    if not found.permanent:
        await repo.record_event(session, message, "soft_bounced", now, data)
        return "soft_bounce", True
    reason = f"{found.status or 'hard bounce'} {found.diagnostic}".strip()
    day = Window.from_dict(message.window).local_date(now)
    recorded = await repo.record_hard_bounce(session, message, now, day, reason, data, found.status)
    if recorded:
        await repo.count_for_domain(session, message, Signal.DSN_BOUNCE, now, clock)
    return "hard_bounce", recorded


async def complaint(
    session: AsyncSession,
    message: Any,
    feedback_type: str | None,
    sender: str,
    clock: Clock,
    origin: Mapping[str, Any] = MAIL,
) -> tuple[str, bool]:
    """The lead reported the message as spam: complained, suppressed, its pending mail cancelled, counted
    towards its sending domain's health (once)."""
    now = clock()
    data = {"feedback_type": feedback_type, "from": sender[:320], **origin}
    recorded = await repo.record_complaint(session, message, now, data)
    if recorded:
        await repo.count_for_domain(session, message, Signal.COMPLAINT, now, clock)
    return "complaint", recorded


async def reported(
    session: AsyncSession, message: Any, event: Reported, provider: str, clock: Clock
) -> tuple[str, bool]:
    """An ESP's event: a bounce or a complaint as if it had come by mail; a delivery is recorded only."""
    origin = {"esp": provider, "event_id": event.event_id}
    if event.kind == "complaint":
        return await complaint(session, message, event.feedback_type, event.recipient, clock, origin)
    if event.kind == "delivery":
        data = {"recipient": event.recipient, "response": event.diagnostic, **origin}
        await repo.record_event(session, message, "delivered", clock(), data)
        return "delivery", True
    assert event.kind in ("hard_bounce", "soft_bounce"), event.kind
    failure = Failure(event.kind == "hard_bounce", event.status, event.recipient or None, event.diagnostic)
    return await bounce(session, message, failure, clock, origin)


async def answer(
    session: AsyncSession, message: Any, found: Reply, now: datetime, source: Source
) -> tuple[str, bool]:
    """A person's reply stops the lead's follow-ups; an automatic one (out of office) is only recorded."""
    data = {"from": found.sender[:320], "automatic": found.automatic, "source": source}
    if found.automatic:
        await repo.record_event(session, message, "auto_replied", now, data)
        return "automatic_reply", True
    return "replied", await repo.record_reply(session, message, now, data, source)
