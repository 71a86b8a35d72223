"""Tenant templates compiled and rendered off the event loop, in worker processes this service owns.

Jinja2's sandbox bounds what a template may touch and (`shared.render`) how much it may output, not how long
it runs or how much memory it takes. So every compile and render is a job for a `shared.workers` pool of
`shared.render_worker` processes: one job at a time each, under a memory limit, with a deadline per job after
which the worker is killed and replaced. The event loop only waits on a pipe, so the service keeps answering
whatever a template does. The pool is started and stopped with its service (`async with`); here a failure of
the worker is the template's RenderError, and RendererUnavailable when no worker can start.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from shared.render import Letter, Rendered, RenderError, TemplateLimits
from shared.render_worker import answer_of, request_of
from shared.settings import Settings
from shared.workers import JobOverran, WorkerFailed, WorkerPool, WorkersUnavailable


class RendererUnavailable(RuntimeError):
    """No worker could be started or it died before it was ready: not the template's fault, try later."""


class RenderPool:
    """`workers` processes; a job waits for an idle one. Every failure of a template is a RenderError."""

    def __init__(self, limits: TemplateLimits, workers: int, seconds: float, memory_mb: int) -> None:
        self._seconds = seconds
        self._workers = WorkerPool(
            "render",
            "shared.render_worker",
            asdict(limits),
            workers=workers,
            seconds=seconds,
            memory_mb=memory_mb,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderPool:
        limits = TemplateLimits(settings.template_source_max_chars, settings.template_output_max_chars)
        return cls(
            limits, settings.template_workers, settings.template_render_seconds, settings.template_memory_mb
        )

    async def __aenter__(self) -> RenderPool:
        await self._workers.start_all()  # a template's first preview or e-mail need not wait for the imports
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._workers.stop()

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
        try:
            header, blob = await self._workers.call(request_of(job), answer_of)
        except JobOverran as error:
            reason = f"template took longer than the {self._seconds:g} s allowed to {doing}"
            raise RenderError(reason) from error
        except WorkerFailed as error:
            if error.status is None:
                raise RenderError("the render worker answered nonsense") from error
            raise RenderError(f"template stopped its render worker (exit status {error.status})") from error
        except WorkersUnavailable as error:
            raise RendererUnavailable(str(error)) from error
        if "error" in header:
            raise RenderError(str(header["error"]), header.get("part"))
        return header, blob
