"""`make run`: the SMTP sink, the four services, the tracker's mailbox reader and the webhooks worker as child
processes, logs interleaved, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

SERVICES = {
    "smtp-sink": [sys.executable, "-m", "tools.smtp_sink", "--port", "1025", "--dir", "var/mail"],
    "api": [sys.executable, "-m", "services.api"],
    "scheduler": [sys.executable, "-m", "services.scheduler"],
    "sender": [sys.executable, "-m", "services.sender"],
    "tracker": [sys.executable, "-m", "services.tracker"],
    "inbox": [sys.executable, "-m", "services.tracker", "inbox"],  # the sending mailboxes, over IMAP
    "webhooks": [sys.executable, "-m", "services.webhooks"],  # outgoing webhooks
}
WIDTH = max(map(len, SERVICES))


async def relay(name: str, stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        sys.stdout.write(f"{name:>{WIDTH}} | {line.decode(errors='replace')}")
        sys.stdout.flush()


async def main() -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    children = {
        name: await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
        )
        for name, argv in SERVICES.items()
    }
    print(
        "api http://127.0.0.1:8000/docs · tracker :8001 · scheduler :8002 · sender :8003 · inbox :8004"
        " · webhooks :8005 · mail in var/mail/"
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    relays = [asyncio.create_task(relay(n, c.stdout)) for n, c in children.items() if c.stdout]
    exited = [asyncio.create_task(c.wait()) for c in children.values()]
    await asyncio.wait([asyncio.create_task(stop.wait()), *exited], return_when=asyncio.FIRST_COMPLETED)
    for child in children.values():
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)  # graceful: in-flight work finishes
    await asyncio.gather(*(c.wait() for c in children.values()))
    await asyncio.gather(*relays)
    failed = {n: c.returncode for n, c in children.items() if c.returncode not in (0, -signal.SIGTERM)}
    if failed and not stop.is_set():
        print(f"stopped because a service exited: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
