"""Hostile work (tenant templates, mail from the internet) in worker processes the service owns.

A `WorkerPool` keeps a few worker processes; each takes one job at a time: a request of bytes in, an answer
of bytes out, each a length-prefixed frame over the worker's stdin and stdout. A worker still busy at the
job's deadline is killed (a thread could not be stopped) and replaced at its next job, so the service's event
loop only ever waits on a pipe. Adapters (`shared.render_pool`, `services.tracker.readers`) encode their jobs,
decode the answers and say what a failure means for their callers. A worker module's main is `serve(setup)`.

How a worker is started, and why:
- a fresh interpreter (`python -m <module>`), spawned from a thread: never a fork of a process running an
  event loop, and uvloop would fork on the loop itself (stalls of tens of milliseconds were measured);
- with an empty environment: a worker sees none of the service's configuration or secrets;
- in a session of its own and with a niceness of 10 more than the service: where the kernel groups processes
  by session for scheduling (autogroup), a busy worker takes its own group's CPU time, and where it does not
  (containers, services in cgroups), its niceness leaves the CPU to the service first;
- under an address-space limit, and a CPU-time limit per job that ends it should the service be gone.

Answers are trusted no more than the input that made them: never unpickled, at most `answer_max_bytes`, and a
worker whose answer its adapter cannot decode is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import structlog

log = structlog.get_logger()

T = TypeVar("T")
Handler = Callable[[bytes], bytes]

ROOT = (
    Path(__file__).resolve().parents[1]
)  # where `python -m shared…` and `python -m services…` find the code
FRAME = struct.Struct("!I")  # the length of the request or answer that follows
READY = b"maildash-worker-ready"  # a worker's first answer: it has imported what it needs
NICENESS = 10
MIB = 1024 * 1024
START_SECONDS = 30.0  # a fresh worker imports its libraries in well under a second, when the machine is idle
STOP_SECONDS = 2.0


class WorkerError(Exception):
    """A job that got no answer."""


class WorkersUnavailable(WorkerError):
    """No worker could be started, or it ended before it was ready: not the job's fault, try later."""


class JobOverran(WorkerError):
    """The job's worker was still busy at the deadline, and was killed."""


class WorkerFailed(WorkerError):
    """The job's worker died (`status` is its exit status) or answered nonsense (`status` is None)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class _Process:
    """A running worker and the two ends of its pipes, on the event loop."""

    popen: subprocess.Popen[bytes]
    requests: asyncio.WriteTransport
    reading: asyncio.ReadTransport
    answers: asyncio.StreamReader
    ready: bool = False

    @classmethod
    async def start(cls, command: list[str], niceness: int) -> _Process:
        try:
            popen = await asyncio.to_thread(_spawn, command, niceness)
        except OSError as error:
            raise WorkersUnavailable(f"cannot start a worker: {error}") from error
        assert popen.stdin is not None, "piped"
        assert popen.stdout is not None, "piped"
        loop = asyncio.get_running_loop()
        answers = asyncio.StreamReader()
        try:
            reading, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(answers), popen.stdout
            )
            # A request is written whole while the worker waits for it: no flow control needed.
            requests, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, popen.stdin)
        except BaseException:
            popen.kill()
            await asyncio.to_thread(popen.wait)
            raise
        return cls(popen, requests, reading, answers)

    async def wait_ready(self) -> None:
        try:
            async with asyncio.timeout(START_SECONDS):
                first = await self.answer(len(READY))
        except (TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
            raise WorkersUnavailable(f"a worker did not start ({error!r})") from error
        if first != READY:
            raise WorkersUnavailable(f"a worker started badly: {first[:100]!r}")
        self.ready = True

    async def answer(self, max_bytes: int) -> bytes:
        (length,) = FRAME.unpack(await self.answers.readexactly(FRAME.size))
        if length > max_bytes:
            raise ValueError(f"an answer of {length} bytes")
        return await self.answers.readexactly(length)

    async def wait(self, timeout: float | None = None) -> int:
        return await asyncio.to_thread(self.popen.wait, timeout)


def _spawn(command: list[str], niceness: int) -> subprocess.Popen[bytes]:
    popen = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={},
        start_new_session=True,
    )
    try:
        # At once, before its interpreter has imported much: the service's CPU first, from the start.
        os.setpriority(os.PRIO_PROCESS, popen.pid, niceness)
    except OSError:
        popen.kill()
        popen.wait()
        raise
    return popen


class _Worker:
    """One worker slot: its process is started on first use, and again after it was killed or died."""

    def __init__(self, pool: str, command: list[str], niceness: int) -> None:
        self._pool = pool
        self._command = command
        self._niceness = niceness
        self._process: _Process | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.popen.poll() is None

    async def start(self) -> _Process:
        if self._process is not None and self._process.popen.poll() is not None:
            await self.stop()  # it died between jobs (the OOM killer, an operator): not the next job's fault
        if self._process is None:
            self._process = await _Process.start(self._command, self._niceness)
            log.info("workers.worker.started", pool=self._pool, pid=self._process.popen.pid)
        return self._process

    async def call(self, request: bytes, seconds: float, decode: Callable[[bytes], T], answer_max: int) -> T:
        process = await self.start()
        done = False
        try:
            if not process.ready:
                await process.wait_ready()
            try:
                async with asyncio.timeout(seconds):
                    process.requests.write(FRAME.pack(len(request)) + request)
                    answer = await process.answer(answer_max)
                decoded = decode(answer)
            except TimeoutError:
                log.warning("workers.job.killed", pool=self._pool, pid=process.popen.pid, seconds=seconds)
                raise JobOverran(f"still busy after {seconds:g} s") from None
            except asyncio.IncompleteReadError:
                status = await process.wait()
                log.warning("workers.worker.died", pool=self._pool, pid=process.popen.pid, status=status)
                raise WorkerFailed(f"the worker ended with exit status {status}", status) from None
            except ValueError as error:
                log.warning(
                    "workers.answer.refused", pool=self._pool, pid=process.popen.pid, error=str(error)
                )
                raise WorkerFailed(f"the worker answered nonsense: {error}") from error
            done = True
            return decoded
        finally:
            if not done:  # overran, died, answered nonsense, or the caller gave up half-way: state unknown
                await self.stop(at_once=True)

    async def stop(self, at_once: bool = False) -> None:
        """Kill the worker, or first ask it to exit (the end of its input) and wait a moment."""
        process, self._process = self._process, None
        if process is None:
            return
        process.requests.close()
        if not at_once:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await process.wait(STOP_SECONDS)
        if process.popen.poll() is None:
            process.popen.kill()
        await process.wait()
        process.reading.close()


class WorkerPool:
    """`workers` processes of `python -m module`; a job waits for an idle one. Use as `async with`: on the
    way out every worker is ended. Workers start at their first job, or all at once with `start_all`.

    `config` (JSON) goes to the worker module's `setup`; `seconds` is each job's deadline, counted from the
    moment a worker takes it; `memory_mb` each worker's address space; a longer answer is nonsense."""

    def __init__(
        self,
        name: str,
        module: str,
        config: dict[str, Any],
        *,
        workers: int,
        seconds: float,
        memory_mb: int,
        answer_max_bytes: int | None = None,
        backlog: int | None = None,
    ) -> None:
        self._name = name
        # Jobs that may wait for a worker (None: any number). Beyond it a job is refused at once
        # (WorkersUnavailable): each waiting job holds its request, a mail of megabytes for the readers.
        self._backlog = backlog
        self._waiting = 0
        self._seconds = seconds
        self._answer_max = answer_max_bytes or memory_mb * MIB  # no worker can make more
        options = json.dumps({"config": config, "seconds": seconds, "memory_mb": memory_mb})
        # Linux keeps a niceness per thread: this one's, the service's main thread, not a helper thread's.
        niceness = os.getpriority(os.PRIO_PROCESS, 0) + NICENESS
        self._workers = [
            _Worker(name, [sys.executable, "-m", module, options], niceness) for _ in range(workers)
        ]
        self._turns = asyncio.Semaphore(workers)
        # Running workers on the right, taken first (and the last used first): an idle pool keeps its warm
        # processes, and a job starts a process only when none is left.
        self._idle = deque(self._workers)

    async def __aenter__(self) -> WorkerPool:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start_all(self) -> None:
        """Start every worker now: each imports in the background, and its first job waits until it is
        ready. One that cannot start now is tried again by its first job."""
        for worker in self._workers:
            try:
                await worker.start()
            except WorkersUnavailable as error:
                log.warning("workers.worker.unavailable", pool=self._name, error=str(error))

    async def call(self, request: bytes, decode: Callable[[bytes], T], *, waits: bool = False) -> T:
        """`decode` of a worker's answer to `request`. Raises JobOverran, WorkerFailed (also when `decode`
        raises ValueError: the answer is nonsense) or WorkersUnavailable (also when the backlog is full).

        `waits`: the caller bounds its own jobs (the mailbox reader), so the job waits for a worker and is
        never refused for the backlog. (A caller counting its jobs against the backlog was refused now and
        then: a job already given a worker is still counted as waiting until it resumes.)"""
        if (
            not waits
            and self._backlog is not None
            and self._turns.locked()
            and self._waiting >= self._backlog
        ):
            raise WorkersUnavailable(f"every {self._name} worker is busy and {self._waiting} jobs wait")
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1
        try:
            worker = self._idle.pop()
            try:
                return await worker.call(request, self._seconds, decode, self._answer_max)
            finally:
                if worker.running:
                    self._idle.append(worker)
                else:
                    self._idle.appendleft(worker)
        finally:
            self._turns.release()

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self._workers))


def serve(setup: Callable[[dict[str, Any]], Handler]) -> None:
    """The main of a worker module: answers one request after another, with the handler `setup` makes of
    the pool's `config`, until the service closes the worker's stdin. A handler answers every request
    (its failures included) as bytes; should it raise, the worker ends and the pool sees it died."""
    options = json.loads(sys.argv[1])
    handle = setup(options["config"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the service, which then ends its workers
    memory = int(options["memory_mb"]) * MIB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # Should the service be gone and unable to kill us: SIGPROF (its default action ends the process, even
    # inside C code) after twice the job's deadline in CPU time. The service's own deadline comes first.
    cpu_seconds = 2 * float(options["seconds"]) + 1
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything else printed goes to the log, not an answer
    requests = sys.stdin.buffer
    _write_frame(answers, READY)
    while (request := _read_frame(requests)) is not None:
        signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
        answer = handle(request)
        signal.setitimer(signal.ITIMER_PROF, 0)
        _write_frame(answers, answer)


def _read_frame(stream: BinaryIO) -> bytes | None:
    """The next request, or None once the service closed the pipe."""
    head = stream.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    (length,) = FRAME.unpack(head)
    payload = stream.read(length)
    return payload if len(payload) == length else None


def _write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(FRAME.pack(len(payload)) + payload)
    stream.flush()
