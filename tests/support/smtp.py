"""An aiosmtpd sink on a free loopback port, holding what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from tools.smtp_sink import Received, SinkHandler, start

_handed_out: set[int] = set()


def _ours(port: int) -> bool:
    """Under pytest-xdist each worker hands out only the ports of its own residue, so two workers never give
    one port to two services (the loser's bind would fail and its tests would talk to the winner's). By
    port // 2: Linux gives `bind(0)` ports of one parity only."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    return port // 2 % workers == worker


def free_port() -> int:
    """A loopback port nobody listens on, never the same twice in one run (the OS may offer one again
    between our probe and the service's bind)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out and _ours(port):
            _handed_out.add(port)
            return port


@dataclass
class SmtpSink:
    host: str
    port: int
    handler: SinkHandler

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def answer_from(self, nth: int, reply: str, phase: Literal["rcpt", "data"] = "data") -> None:
        """From the Nth mail on (numbered by MAIL FROM, from 1), answer `reply` at RCPT or DATA instead of
        taking it: e.g. `answer_from(31, "550 5.7.1 Message refused as spam", "rcpt")`, or a 421 deferral."""
        self.handler.answer_from(nth, reply, phase)

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} e-mails at the sink, got {len(self.received)}")
            await asyncio.sleep(0.05)
        return self.received


@contextlib.asynccontextmanager
async def running_sink(port: int | None = None, **server: Any) -> AsyncIterator[SmtpSink]:
    """`server`: aiosmtpd options, e.g. `tls_context` and `require_starttls`, or `ssl_context`."""
    port = port or free_port()
    controller, handler = await asyncio.to_thread(start, "127.0.0.1", port, **server)
    try:
        yield SmtpSink("127.0.0.1", port, handler)
    finally:
        await asyncio.to_thread(controller.stop)
