"""Composition root of the mailbox reader: `python -m services.tracker inbox`. A process of the tracker
with its own reader processes for mail (`MailReaders`), the outbox relay that publishes what the mail
caused, the leases, and /healthz, /readyz and /metrics on `inbox_port`."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import structlog
from starlette.applications import Starlette
from starlette.types import ASGIApp

from services.tracker.inbox.lease import Leases
from services.tracker.inbox.mailbox import MailboxReader
from services.tracker.inbox.processing import MailProcessor
from services.tracker.readers import MailReaders
from shared.clock import Clock, utcnow
from shared.oauth_tokens import TokenSource
from shared.observability import health_routes
from shared.runtime import Runtime
from shared.settings import Settings

log = structlog.get_logger()


def create_app(settings: Settings | None = None, clock: Clock = utcnow) -> ASGIApp:
    settings = settings or Settings()
    runtime = Runtime.build(settings, "inbox")
    readers = MailReaders(settings)
    processor = MailProcessor(runtime.sessions, readers, settings, clock)
    tokens = TokenSource(settings, clock)  # the OAuth2 logins of the mailboxes with a grant

    def start(account_id: uuid.UUID) -> asyncio.Task[None]:
        reader = MailboxReader(account_id, runtime.sessions, processor, settings, clock, tokens)
        return asyncio.create_task(reader.run(), name=f"mailbox-{account_id}")

    leases = Leases(runtime.sessions, settings.inbox_lease_seconds, settings.inbox_max_accounts, start)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with readers, tokens, runtime.serving(leases.run()):
            log.info("tracker.inbox.start.ok", holder=leases.holder)
            yield

    app = Starlette(
        routes=health_routes(runtime.readiness_checks(), optional=frozenset({"broker"})), lifespan=lifespan
    )
    app.state.runtime = runtime
    app.state.leases = leases
    return app
