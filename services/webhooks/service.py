"""The webhooks worker: up to `webhook_concurrency` endpoints at once, one request at a time per endpoint.

A worker task claims an endpoint (a lease, `repository.CLAIM`), sends its oldest pending delivery, records
the attempt and releases the lease in one transaction, then claims again. Each claim that finds work starts
another task while there are fewer than `webhook_concurrency`, so idle endpoints cost nothing and a slow or
hanging receiver holds one task for at most `webhook_timeout_seconds`. NOTIFY from the outbox's trigger
wakes the worker for new deliveries; a poll every `webhook_poll_seconds` finds retries falling due.

Delivery is at least once: a worker that dies after the request and before the commit leaves the delivery
pending, and its lease runs out; the same `webhook-id` goes out again.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx
import structlog
from cryptography.fernet import InvalidToken
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.webhooks import repository as repo
from services.webhooks.repository import Claim, Outcome
from shared import crypto, webhooks
from shared.clock import Clock
from shared.db.notify import Listener
from shared.public_address import UnusableHost, resolve_public
from shared.settings import Settings

log = structlog.get_logger()

CHANNEL = "maildash_webhooks"  # NOTIFY by the outbox's trigger (migration 0013)

ATTEMPTS = Counter("maildash_webhook_attempts_total", "Requests to webhook endpoints", ["outcome"])
LAG = Histogram(
    "maildash_webhook_delivery_lag_seconds",
    "From the event's delivery being written to the receiver's 2xx",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 6 * 3600, 86400, 3 * 86400),
)


class Deliverer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
        client: httpx.AsyncClient,
    ) -> None:
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._client = client
        self._rules = settings.webhook_retries
        # Long enough for a name look-up and a whole request; a dead worker's endpoint waits this long.
        self._lease = timedelta(seconds=2 * settings.webhook_timeout_seconds + 30)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def run(self) -> None:
        """Until cancelled; then the requests in flight finish (at most one timeout) before it returns."""
        try:
            async with Listener(self._settings.database_url, CHANNEL) as listener:
                while True:
                    self._spread()
                    await listener.wait(self._settings.webhook_poll_seconds)
        finally:
            self._stopping = True
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self._settings.webhook_timeout_seconds + 5)

    def _spread(self) -> None:
        if not self._stopping and len(self._tasks) < self._settings.webhook_concurrency:
            task = asyncio.create_task(self._work())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _work(self) -> None:
        try:
            while not self._stopping and (claim := await self._claim()) is not None:
                self._spread()  # another endpoint may be waiting too
                await self._deliver(claim)
        except Exception as error:  # the database is away: the next wake-up tries again
            log.warning("webhooks.work.retry", error=str(error) or type(error).__name__)

    async def _claim(self) -> Claim | None:
        now = self._clock()
        async with self._sessions() as session, session.begin():
            return await repo.claim(session, now, now + self._lease)

    async def _deliver(self, claim: Claim) -> None:
        outcome = await self.send(claim)
        now = self._clock()
        retry_at = None
        if not outcome.succeeded:
            retry_at = self._rules.next_attempt(claim.first_attempt_at or now, claim.failures + 1, now)
        async with self._sessions() as session, session.begin():
            await repo.record(session, claim, outcome, now, retry_at)
            if not outcome.succeeded and retry_at is None:
                reason = (
                    f"disabled after failing for {_duration(now - (claim.first_attempt_at or now))}: "
                    f"the last attempt got {outcome.error}"
                )
                await repo.disable(session, claim.endpoint_id, reason, now)
        ATTEMPTS.labels("delivered" if outcome.succeeded else "failed").inc()
        if outcome.succeeded:
            LAG.observe(max(0.0, (now - claim.created_at).total_seconds()))
        log.info(
            "webhooks.delivery.sent" if outcome.succeeded else "webhooks.delivery.failed",
            endpoint_id=str(claim.endpoint_id), delivery_id=str(claim.delivery_id),
            event_type=claim.event_type, status_code=outcome.status_code, error=outcome.error,
            retry_at=retry_at and retry_at.isoformat(),
        )  # fmt: skip

    async def send(self, claim: Claim) -> Outcome:
        """One signed POST, `webhook_timeout_seconds` at most from the look-up to the answer's end."""
        started = time.monotonic()
        status_code: int | None = None
        response: str | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self._settings.webhook_timeout_seconds):
                status_code, response = await self._post(claim)
        except TimeoutError:
            error = f"no answer within {self._settings.webhook_timeout_seconds:g} s"
        except UnusableHost as refused:
            error = str(refused)
        except httpx.HTTPError as failed:
            error = f"{type(failed).__name__}: {failed}"[:500]
        except InvalidToken:  # tried again: the operator may put the old key back
            error = "the signing secret cannot be decrypted (was MAILDASH_ENCRYPTION_KEY changed?)"
        duration_ms = round((time.monotonic() - started) * 1000)
        succeeded = status_code is not None and webhooks.succeeded(status_code)
        if status_code is not None and not succeeded:
            error = f"HTTP {status_code}"
        return Outcome(status_code, succeeded, duration_ms, error, response)

    async def _post(self, claim: Claim) -> tuple[int, str]:
        """The request goes to an address judged by the public-address rule now (a name that pointed
        outside when it was saved may point inside today), with the URL's host name in `Host` and SNI."""
        url = httpx.URL(claim.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        [address, *_] = await resolve_public(
            url.host,
            port,
            allow_private=self._settings.private_hosts_allowed,
            timeout=self._settings.webhook_timeout_seconds,
        )
        pinned = url.copy_with(host=address)
        body = webhooks.body(claim.event_type, claim.payload)
        secret = crypto.decrypt(self._settings.encryption_key, claim.secret_encrypted)
        headers = {
            **webhooks.signed_headers(secret, str(claim.event_id), int(self._clock().timestamp()), body),
            "host": _host_header(url),
            "user-agent": "Maildash-Webhooks/1",
        }
        request = self._client.build_request(
            "POST", pinned, content=body, headers=headers, extensions={"sni_hostname": url.host}
        )
        reply = await self._client.send(request, stream=True)
        try:
            kept = bytearray()
            async for chunk in reply.aiter_raw():
                kept += chunk
                if len(kept) >= self._settings.webhook_response_chars:
                    break
            return reply.status_code, kept[: self._settings.webhook_response_chars].decode(errors="replace")
        finally:
            await reply.aclose()


def _host_header(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{host}:{url.port}" if url.port else host


def _duration(span: timedelta) -> str:
    hours = span.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    return f"{hours:.1f} hours" if hours >= 1 else f"{span.total_seconds():.0f} s"
