"""LISTEN/NOTIFY wake-ups over a dedicated asyncpg connection.

A wake-up is a hint, never a delivery guarantee: callers poll with a timeout as the safety net, and a lost
connection only degrades them to polling until it is re-established.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

import asyncpg

from shared.db import asyncpg_dsn


class Listener:
    def __init__(self, database_url: str, channel: str) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._channel = channel
        self._event = asyncio.Event()
        self._connection: asyncpg.Connection | None = None

    def _on_notify(self, *_: Any) -> None:
        self._event.set()

    async def _connect(self) -> None:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            connection = await asyncpg.connect(self._dsn, timeout=5)
            await connection.add_listener(self._channel, self._on_notify)
            self._connection = connection

    async def wait(self, timeout: float) -> None:
        """Return on a notification or after `timeout` seconds, whichever comes first."""
        if self._connection is None or self._connection.is_closed():
            await self._connect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    async def __aenter__(self) -> Listener:
        await self._connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._connection is not None and not self._connection.is_closed():
            await self._connection.close()
