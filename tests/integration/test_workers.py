"""The worker-process pool under the render workers and the mail readers (`shared.workers`), with a toy
worker: a job that overruns, a worker that dies or answers nonsense, and what a worker may see and take."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest

from shared.workers import JobOverran, WorkerFailed, WorkerPool, WorkersUnavailable

pytestmark = pytest.mark.integration

SECONDS = 1.0


def toy_pool(workers: int = 1, backlog: int | None = None) -> WorkerPool:
    return WorkerPool(
        "toy",
        "tests.support.toy_worker",
        {"greeting": "hi"},
        workers=workers,
        seconds=SECONDS,
        memory_mb=200,
        backlog=backlog,
    )


async def itself(pool: WorkerPool) -> dict[str, Any]:
    answer: dict[str, Any] = await pool.call(b"itself", json.loads)
    return answer


def alive(pid: int) -> bool:
    """Whether `pid` still exists: the pool reaps every worker it ends."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_worker_sees_no_environment_and_takes_less_cpu_and_memory_than_its_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILDASH_JWT_SECRET", "a secret of the service")
    async with toy_pool() as pool:
        worker = await itself(pool)
    assert "MAILDASH_JWT_SECRET" not in worker["environment"]
    assert worker["session"] == worker["pid"]  # a session of its own
    assert worker["niceness"] == os.getpriority(os.PRIO_PROCESS, 0) + 10
    assert worker["address_space"] == 200 * 1024 * 1024
    assert worker["config"] == {"greeting": "hi"}
    assert not alive(worker["pid"])  # ended with its pool


async def test_a_job_past_its_deadline_is_killed_and_the_next_job_gets_a_new_worker() -> None:
    async with toy_pool() as pool:
        first = await itself(pool)
        started = time.perf_counter()
        with pytest.raises(JobOverran):
            await pool.call(b"spin", json.loads)
        assert time.perf_counter() - started < SECONDS + 0.5
        assert not alive(first["pid"])
        assert (await itself(pool))["pid"] != first["pid"]


@pytest.mark.parametrize(("request_", "status"), [(b"exit", 3), (b"nonsense", None)])
async def test_a_worker_that_dies_or_answers_nonsense_fails_its_job_and_is_replaced(
    request_: bytes, status: int | None
) -> None:
    async with toy_pool() as pool:
        first = await itself(pool)
        with pytest.raises(WorkerFailed) as failed:
            await pool.call(request_, json.loads)
        assert failed.value.status == status
        assert not alive(first["pid"])
        assert await pool.call(b"next", json.loads) == {"echo": "next"}


async def test_jobs_wait_for_an_idle_worker_and_a_warm_one_is_taken_first() -> None:
    async with toy_pool(workers=2) as pool:
        one = await itself(pool)
        assert (await itself(pool))["pid"] == one["pid"]  # no second worker is started for nothing
        at_once = await asyncio.gather(*(itself(pool) for _ in range(6)))
        assert len({worker["pid"] for worker in at_once}) == 2


async def test_beyond_its_backlog_a_job_is_refused_at_once_and_the_waiting_ones_still_run() -> None:
    async with toy_pool(backlog=1) as pool:
        await itself(pool)  # started and warm
        busy = asyncio.create_task(pool.call(b"spin", json.loads))  # holds the only worker for SECONDS
        await asyncio.sleep(0.1)
        waiting = asyncio.create_task(itself(pool))  # the one job the backlog takes
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        with pytest.raises(WorkersUnavailable, match="busy"):
            await itself(pool)
        assert time.perf_counter() - started < 0.1
        with pytest.raises(JobOverran):
            await busy
        assert (await waiting)["config"] == {"greeting": "hi"}


async def test_a_job_that_waits_is_never_refused_for_the_backlog() -> None:
    async with toy_pool(backlog=0) as pool:
        await itself(pool)
        busy = asyncio.create_task(pool.call(b"spin", json.loads))
        await asyncio.sleep(0.1)
        with pytest.raises(WorkersUnavailable, match="busy"):
            await itself(pool)
        waiting = [asyncio.create_task(pool.call(b"itself", json.loads, waits=True)) for _ in range(3)]
        with pytest.raises(JobOverran):
            await busy
        assert [answer["config"] for answer in await asyncio.gather(*waiting)] == [{"greeting": "hi"}] * 3
