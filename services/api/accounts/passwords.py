"""Passwords: argon2 via pwdlib, checked in a few niced threads off the event loop, with admission control."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog
from pwdlib import PasswordHash

from services.api.kit.envelope import ApiError

ARGON2_NICENESS = 10
T = TypeVar("T")
log = structlog.get_logger()


class Passwords:
    """Argon2 hashing and verification in a few threads (argon2-cffi releases the GIL while it works), so
    that no password check ever holds the event loop that serves every other request."""

    def __init__(self, workers: int, queue: int) -> None:
        self._hasher = PasswordHash.recommended()
        # Niced threads (Linux nices per thread, and argon2's own lane threads inherit it): a login flood
        # still gets the CPU that the event loop leaves, but the loop gets it first (healthz p99 under load
        # here: ~100 ms without, ~20 ms with).
        self._threads = ThreadPoolExecutor(
            workers, thread_name_prefix="argon2", initializer=os.nice, initargs=(ARGON2_NICENESS,)
        )
        self._capacity = workers + queue
        self._admitted = 0
        # An address without a user is checked against this hash, so that it takes as long as a real one.
        self._nobody = self._hasher.hash(secrets.token_urlsafe())

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """A place among the logins whose password is being checked or waits for a thread; 429 at once when
        all are taken, so that a flood of logins is refused instead of queued without bound."""
        if self._admitted >= self._capacity:
            log.warning("api.login.shed", checking=self._admitted)
            raise ApiError(
                429,
                "too_many_requests",
                "too many logins at once; try again in a second",
                {"Retry-After": "1"},
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def hash(self, password: str) -> str:
        return await self._in_thread(self._hasher.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Whether `password` matches; None (no such user) takes the same time and is never a match."""
        matches = await self._in_thread(self._hasher.verify, password, password_hash or self._nobody)
        return matches and password_hash is not None

    async def _in_thread(self, function: Callable[..., T], *args: str) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
