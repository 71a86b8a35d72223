"""Latency of an HTTP endpoint, sampled by a process of its own while a test does something else: neither the
test's event loop (busy sending megabytes, or serving an in-process service) nor its GIL delays a sample.

    async with sampling(url) as sampled:
        ...                      # one GET after another, until the block ends
    sampled.quantile(0.99)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import select
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
READY = b"sampling\n"


@dataclass
class Samples:
    seconds: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # 0: no answer within the sampler's timeout

    def quantile(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    def summary(self) -> str:
        if not self.seconds:
            return "no samples"
        return (
            f"{len(self.seconds)} samples, p50 {self.quantile(0.5) * 1000:.1f} ms, "
            f"p99 {self.quantile(0.99) * 1000:.1f} ms, max {max(self.seconds) * 1000:.1f} ms"
        )


@contextlib.asynccontextmanager
async def sampling(url: str, pause: float = 0.005) -> AsyncIterator[Samples]:
    """Samples `url` from the moment the block starts until it ends (filled in then)."""
    sampler = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        url,
        str(pause),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert sampler.stdin is not None
    assert sampler.stdout is not None
    samples = Samples()
    try:
        assert await sampler.stdout.readline() == READY, "the sampler did not start"
        yield samples
    finally:
        sampler.stdin.close()  # its signal to stop and report
        report = await sampler.stdout.read()
        await sampler.wait()
    samples.seconds, samples.statuses = json.loads(report)


def _sample(url: str, pause: float, timeout: float = 5.0) -> None:
    seconds, statuses = [], []
    with httpx.Client(timeout=timeout) as client:
        client.get(url)  # connected and warm before the first sample counts
        sys.stdout.buffer.write(READY)
        sys.stdout.flush()
        while not select.select([sys.stdin], [], [], pause)[0]:  # stdin readable: closed, time to stop
            started = time.perf_counter()
            try:
                status = client.get(url).status_code
            except httpx.TimeoutException:
                status = 0
            seconds.append(time.perf_counter() - started)
            statuses.append(status)
    sys.stdout.write(json.dumps([seconds, statuses]))


if __name__ == "__main__":
    _sample(sys.argv[1], float(sys.argv[2]))
