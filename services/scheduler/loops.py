"""The scheduler's clockwork: dispatch as slots come due, reconcile on a slow beat."""

from __future__ import annotations

import asyncio

import structlog

from services.scheduler.service import Scheduler
from shared.db.notify import Listener

log = structlog.get_logger()
SLOTS_CHANNEL = "maildash_slots"


async def dispatch_forever(
    scheduler: Scheduler, database_url: str, batch_size: int, poll_seconds: float
) -> None:
    """Sleep until the next slot is due or slots change (NOTIFY), never longer than `poll_seconds`."""
    async with Listener(database_url, SLOTS_CHANNEL) as listener:
        while True:
            try:
                if await scheduler.dispatch_due() >= batch_size:
                    continue
                due_in = await scheduler.next_due_in()
            except Exception as error:  # database away: keep trying, never die
                log.warning("scheduler.dispatch.retry", error=str(error) or type(error).__name__)
                await asyncio.sleep(1.0)
                continue
            await listener.wait(poll_seconds if due_in is None else min(due_in, poll_seconds))


async def reconcile_forever(scheduler: Scheduler, every_seconds: float) -> None:
    while True:
        try:
            await scheduler.reconcile()
        except Exception as error:
            log.warning("scheduler.reconcile.retry", error=str(error) or type(error).__name__)
        await asyncio.sleep(every_seconds)
