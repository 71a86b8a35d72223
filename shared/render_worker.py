"""A render worker: compiles and renders tenant templates for the service process that started it.

`shared.render_pool` runs it through `shared.workers` (`python -m shared.render_worker …`), which bounds its
time, memory and CPU claim and frames its requests and answers. This module is the job's protocol, on both
sides: a job goes in pickled (from the service, which we trust), an answer comes out as a JSON header and
raw bytes, never a pickle, so even template code that escaped the sandbox could not run code in the service.
"""

from __future__ import annotations

import json
import pickle
import struct
from typing import Any

from shared import workers
from shared.render import RenderError, TemplateLimits, build, compile_template, render

HEADER = struct.Struct("!I")  # length of an answer's JSON header, before its raw bytes


def request_of(job: tuple[Any, ...]) -> bytes:
    return pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)


def answer_of(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and raw bytes of an answer; ValueError for anything a render worker does not answer."""
    if len(payload) < HEADER.size:
        raise ValueError("an answer shorter than its header's length")
    (length,) = HEADER.unpack_from(payload)
    header = json.loads(payload[HEADER.size : HEADER.size + length])
    if not isinstance(header, dict):
        raise ValueError("an answer whose header is no JSON object")
    return header, payload[HEADER.size + length :]


def _answer(header: dict[str, Any], blob: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return HEADER.pack(len(encoded)) + encoded + blob


def perform(job: tuple[Any, ...], limits: TemplateLimits) -> tuple[dict[str, Any], bytes]:
    """One job: ("check", {part: source}), ("render", letter) or ("build", letter, now)."""
    operation, *arguments = job
    try:
        if operation == "check":
            for part, source in arguments[0].items():
                compile_template(part, source, limits)
            return {}, b""
        if operation == "render":
            rendered = render(arguments[0], limits)
            return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}, b""
        return {}, build(arguments[0], arguments[1], limits)
    except RenderError as error:
        return {"error": str(error), "part": error.part}, b""
    except Exception as error:  # building the e-mail around the rendered parts: data it cannot carry
        return {"error": f"the e-mail cannot be built: {type(error).__name__}: {error}"}, b""


def handler(config: dict[str, Any]) -> workers.Handler:
    """The worker's answer to each request, under the template limits in `config`."""
    limits = TemplateLimits(**config)

    def handle(request: bytes) -> bytes:
        job = pickle.loads(request)  # noqa: S301 (from the service process, which we trust)
        return _answer(*perform(job, limits))

    return handle


if __name__ == "__main__":
    workers.serve(handler)
