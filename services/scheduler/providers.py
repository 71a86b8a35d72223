"""The scheduler's look-ups of receiving providers: the recipient domains a starting campaign wants known
(new, or whose cached answer expired) are resolved in the background, a batch at a time, with no database
connection held while DNS answers. Planning never waits for DNS: until a domain is resolved it stands for
itself, and a domain DNS could not answer for is asked again after `provider_retry_seconds`."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import providers
from shared.clock import Clock
from shared.db import providers as store
from shared.db.message_store import on_session
from shared.resolver import Dns, DnsUnavailable
from shared.settings import Settings

log = structlog.get_logger()
LOOKUPS = Counter("maildash_scheduler_provider_lookups_total", "Recipient domains looked up", ["outcome"])


class ProviderLookups:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
        wanted: asyncio.Event,
    ) -> None:
        """`wanted` is set when a campaign wants domains known: they are looked up at once, not at the next
        poll."""
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        self._dns = Dns(settings.dns_server, settings.dns_timeout_seconds)
        self._at_once = asyncio.Semaphore(settings.provider_lookups)
        self.wanted = wanted

    async def resolve_due(self, batch: int) -> int:
        """Look up to `batch` due domains; how many there were."""
        retry = timedelta(seconds=self._settings.provider_retry_seconds)
        async with self._sessions() as session, session.begin():
            domains = await store.claim_due(on_session(session), self._clock(), batch, retry)
        if not domains:
            return 0
        outcomes = await asyncio.gather(*(self._resolve(domain) for domain in domains))
        resolved = [outcome for outcome in outcomes if isinstance(outcome, providers.Resolution)]
        failed = [(domain, str(o)) for domain, o in zip(domains, outcomes, strict=True) if isinstance(o, str)]
        now = self._clock()
        async with self._sessions() as session, session.begin():
            await store.save(on_session(session), resolved, now)
            for domain, error in failed:
                await store.unresolved(on_session(session), [domain], now + retry, error)
        LOOKUPS.labels("resolved").inc(len(resolved))
        LOOKUPS.labels("unavailable").inc(len(failed))
        log.info("scheduler.providers.resolved", resolved=len(resolved), unavailable=len(failed))
        return len(domains)

    async def _resolve(self, domain: str) -> providers.Resolution | str:
        """The resolution, or why DNS gave none."""
        async with self._at_once:
            try:
                return await providers.resolve(
                    self._dns, domain, self._clock(), self._settings.provider_cache_max_seconds
                )
            except DnsUnavailable as error:
                return str(error)
            except Exception as error:  # a name DNS cannot even be asked about (too long, a bad label)
                return f"{type(error).__name__}: {error}"


async def resolve_forever(lookups: ProviderLookups, batch: int, poll_seconds: float) -> None:
    """Resolve what is due; when nothing more is, wait for a campaign to want domains, or the next poll."""
    while True:
        try:
            if await lookups.resolve_due(batch) >= batch:
                continue
        except Exception as error:  # database away: keep trying, never die
            log.warning("scheduler.providers.retry", error=str(error) or type(error).__name__)
            await asyncio.sleep(1.0)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lookups.wanted.wait(), poll_seconds)
        lookups.wanted.clear()
