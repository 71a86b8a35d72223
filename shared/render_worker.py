"""A render worker: compiles and renders tenant templates for the service process that started it.

`shared.render_pool` runs it as `python -m shared.render_worker …` and owns it: one job at a time, a frame in
on stdin, a frame out on stdout. Here the process bounds what the pool cannot see from outside: its address
space (so a template that allocates without end gets a MemoryError, not the machine's memory) and, should the
pool be gone, its CPU time. It exits when its stdin closes.

Jobs come pickled from the parent, which trusts nothing that comes back: answers are a JSON header and raw
bytes, never pickles, so even template code that escaped the sandbox could not run code in the service.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import signal
import struct
import sys
from typing import Any, BinaryIO

from shared.render import RenderError, TemplateLimits, build, compile_template, render

REQUEST = struct.Struct("!I")  # length of the pickled job
ANSWER = struct.Struct("!II")  # lengths of the JSON header and of the raw bytes after it
READY = {"ready": True}


def read_request(stream: BinaryIO) -> Any:
    """The next job, or None once the parent closed the pipe."""
    head = stream.read(REQUEST.size)
    if len(head) < REQUEST.size:
        return None
    (length,) = REQUEST.unpack(head)
    return pickle.loads(stream.read(length))  # noqa: S301 (from the parent process, which we trust)


def request_frame(job: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    return REQUEST.pack(len(payload)) + payload


def answer_frame(header: dict[str, Any], blob: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return ANSWER.pack(len(encoded), len(blob)) + encoded + blob


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source-chars", type=int, required=True)
    parser.add_argument("--output-chars", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    options = parser.parse_args()
    limits = TemplateLimits(source_chars=options.source_chars, output_chars=options.output_chars)
    memory = options.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    requests, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but answers on the answer pipe
    answers.write(answer_frame(READY))
    answers.flush()
    while (job := read_request(requests)) is not None:
        # Should the service be gone and unable to kill us: SIGPROF (its default action ends the process, even
        # inside C code) after twice the job's deadline in CPU time. The service's own deadline comes first.
        signal.setitimer(signal.ITIMER_PROF, 2 * options.seconds + 1)
        answer = answer_frame(*perform(job, limits))
        signal.setitimer(signal.ITIMER_PROF, 0)
        answers.write(answer)
        answers.flush()


if __name__ == "__main__":
    main()
