"""Tenant templates compiled and rendered off the event loop, in worker processes this service owns.

Jinja2's sandbox bounds what a template may touch and (`shared.render`) how much it may output, not how long
it runs or how much memory it takes. So every compile and render runs in a `shared.render_worker` process,
one job at a time, under a memory limit, with a deadline per job: a worker that overruns is killed and
replaced (a thread could not be stopped). The event loop only waits on a pipe, so the service keeps answering
whatever a template does. The pool is started and stopped with its service (`async with`).

Workers are fresh interpreters (`python -m`, exec'd at once, never a forked copy of a process running an event
loop) and get no environment: nothing of the service's configuration or secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from shared.render import Letter, Rendered, RenderError, TemplateLimits
from shared.render_worker import ANSWER, READY, request_frame
from shared.settings import Settings

log = structlog.get_logger()

ROOT = Path(__file__).resolve().parents[1]
START_SECONDS = 30.0  # a fresh worker imports Jinja2 and the e-mail package: well under a second, when idle
STOP_SECONDS = 2.0


class RendererUnavailable(RuntimeError):
    """No worker could be started or it died before it was ready: not the template's fault, try later."""


@dataclass
class _Process:
    """A running worker and the two ends of its pipes, on the event loop."""

    popen: subprocess.Popen[bytes]
    requests: asyncio.WriteTransport
    reading: asyncio.ReadTransport
    answers: asyncio.StreamReader
    ready: bool = False

    @classmethod
    async def start(cls, arguments: list[str]) -> _Process:
        command = [sys.executable, "-m", "shared.render_worker", *arguments]
        try:
            # In a thread: forking a service process of a hundred megabytes takes tens of milliseconds, and
            # uvloop would fork on the event loop itself. A session of its own: where the kernel groups
            # processes by session for scheduling (autogroup), a spinning template then takes the CPU time of
            # its own group and does not slow the service's (a /healthz p99 of 4 ms instead of 28 ms here).
            popen = await asyncio.to_thread(
                subprocess.Popen,
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=ROOT,
                env={},
                start_new_session=True,
            )
        except OSError as error:
            raise RendererUnavailable(f"cannot start a render worker: {error}") from error
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

    async def wait(self, timeout: float | None = None) -> int:
        return await asyncio.to_thread(self.popen.wait, timeout)


class _Worker:
    """One worker process slot: started on first use, and again after it was killed."""

    def __init__(self, arguments: list[str]) -> None:
        self._arguments = arguments
        self._process: _Process | None = None

    async def start(self) -> _Process:
        if self._process is not None and self._process.popen.poll() is not None:
            await self.stop()  # it died between jobs (the OOM killer, an operator): not the next job's fault
        if self._process is None:
            self._process = await _Process.start(self._arguments)
        return self._process

    async def call(self, request: bytes, seconds: float, doing: str) -> tuple[dict[str, Any], bytes]:
        """The worker's answer to one job within `seconds`; killed (and restarted on next use) otherwise."""
        process = await self.start()
        done = False
        try:
            if not process.ready:
                await _wait_ready(process)
            try:
                async with asyncio.timeout(seconds):
                    process.requests.write(request)
                    answer = await _answer(process.answers)
            except TimeoutError as error:
                log.warning("render.worker.killed", pid=process.popen.pid, seconds=seconds, doing=doing)
                reason = f"template took longer than the {seconds:g} s allowed to {doing}"
                raise RenderError(reason) from error
            except asyncio.IncompleteReadError as error:
                status = await process.wait()
                log.warning("render.worker.died", pid=process.popen.pid, status=status, doing=doing)
                raise RenderError(f"template stopped its render worker (exit status {status})") from error
            done = True
            return answer
        finally:
            if not done:  # overran, died, or the caller gave up half-way: its state is unknown
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


async def _wait_ready(process: _Process) -> None:
    try:
        async with asyncio.timeout(START_SECONDS):
            header, _ = await _answer(process.answers)
    except (TimeoutError, asyncio.IncompleteReadError) as error:
        raise RendererUnavailable(f"a render worker did not start ({error!r})") from error
    if header != READY:
        raise RendererUnavailable(f"a render worker started badly: {header}")
    process.ready = True


async def _answer(stream: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    header_length, blob_length = ANSWER.unpack(await stream.readexactly(ANSWER.size))
    header = json.loads(await stream.readexactly(header_length))
    blob = await stream.readexactly(blob_length) if blob_length else b""
    if not isinstance(header, dict):
        raise RenderError("the render worker answered nonsense")
    return header, blob


class RenderPool:
    """`workers` processes; a job waits for an idle one. Every failure of a template is a RenderError."""

    def __init__(self, limits: TemplateLimits, workers: int, seconds: float, memory_mb: int) -> None:
        self._seconds = seconds
        arguments = [
            f"--source-chars={limits.source_chars}",
            f"--output-chars={limits.output_chars}",
            f"--memory-mb={memory_mb}",
            f"--seconds={seconds}",
        ]
        self._workers = [_Worker(arguments) for _ in range(workers)]
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderPool:
        limits = TemplateLimits(settings.template_source_max_chars, settings.template_output_max_chars)
        return cls(
            limits, settings.template_workers, settings.template_render_seconds, settings.template_memory_mb
        )

    async def __aenter__(self) -> RenderPool:
        for worker in self._workers:
            # Each imports in the background; its first job waits until it is ready. One that cannot start
            # now is tried again by its first job.
            with contextlib.suppress(RendererUnavailable):
                await worker.start()
            self._idle.put_nowait(worker)
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.gather(*(worker.stop() for worker in self._workers))

    async def check(self, sources: dict[str, str]) -> None:
        """RenderError (with the field as `part`) unless every source compiles within its limits."""
        await self._call(("check", sources), "compile")

    async def render(self, letter: Letter) -> Rendered:
        header, _ = await self._call(("render", letter), "render")
        return Rendered(header["subject"], header["html"], header["text"])

    async def build(self, letter: Letter, now: datetime) -> bytes:
        """The e-mail as it goes on the wire: rendered and assembled in one round trip."""
        _, wire = await self._call(("build", letter, now), "render")
        return wire

    async def _call(self, job: tuple[Any, ...], doing: str) -> tuple[dict[str, Any], bytes]:
        request = request_frame(job)
        worker = await self._idle.get()
        try:
            header, blob = await worker.call(request, self._seconds, doing)
        finally:
            self._idle.put_nowait(worker)
        if "error" in header:
            raise RenderError(str(header["error"]), header.get("part"))
        return header, blob
