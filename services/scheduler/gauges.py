"""What the scheduler's `/metrics` reads when it is scraped: the backlog from PostgreSQL, the queue depths
from RabbitMQ. One scheduler or several, each reports the same totals (take the max, not the sum)."""

from __future__ import annotations

from prometheus_client import Gauge

from services.scheduler import repository as repo
from shared.clock import Clock
from shared.observability import Refresh
from shared.runtime import Runtime

PLANNED = Gauge("maildash_scheduler_planned_messages", "Messages waiting for their slot")
DUE_UNSENT = Gauge("maildash_scheduler_due_unsent_messages", "Messages whose slot has come, not sent yet")
QUEUE_DEPTH = Gauge("maildash_queue_messages", "Messages ready in each queue", ["queue"])


def refresher(runtime: Runtime, clock: Clock) -> Refresh:
    async def refresh() -> None:
        async with runtime.sessions() as session:
            planned, due = await repo.backlog(session, clock())
        PLANNED.set(planned)
        DUE_UNSENT.set(due)
        for queue, depth in (await runtime.topology.depths(runtime.broker)).items():
            QUEUE_DEPTH.labels(queue).set(depth)

    return refresh
