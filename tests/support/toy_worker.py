"""A worker for the tests of `shared.workers`: each request names what it does."""

from __future__ import annotations

import json
import os
import resource
from typing import Any

from shared import workers


def handler(config: dict[str, Any]) -> workers.Handler:
    def handle(request: bytes) -> bytes:
        if request == b"spin":
            while True:
                pass
        if request == b"exit":
            os._exit(3)
        if request == b"nonsense":
            return b"\x00 no JSON"
        if request == b"itself":
            return json.dumps(
                {
                    "pid": os.getpid(),
                    "session": os.getsid(0),
                    "niceness": os.getpriority(os.PRIO_PROCESS, 0),
                    "address_space": resource.getrlimit(resource.RLIMIT_AS)[0],
                    "environment": dict(os.environ),
                    "config": config,
                }
            ).encode()
        return json.dumps({"echo": request.decode()}).encode()

    return handle


if __name__ == "__main__":
    workers.serve(handler)
