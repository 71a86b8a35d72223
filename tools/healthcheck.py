"""A container's healthcheck (the image has no curl): exit 0 when the service is ready.

    python -m tools.healthcheck SERVICE      its /readyz answers 200 on its port (SERVICE: api, tracker,
                                             scheduler, sender, inbox or webhooks)
    python -m tools.healthcheck --tcp PORT   something listens on PORT (the SMTP sink)

The service's port comes from the same MAILDASH_* environment as the service's own settings.
"""

from __future__ import annotations

import socket
import sys
import urllib.request

from shared.settings import Settings

# Which setting holds each service's port (`/healthz`, `/readyz` and `/metrics` are served there).
PORT_SETTINGS = {
    "api": "api_port",
    "scheduler": "scheduler_port",
    "sender": "sender_port",
    "tracker": "tracker_port",
    "inbox": "inbox_port",
    "webhooks": "webhooks_port",
}
TIMEOUT_SECONDS = 3


def ready(service: str, settings: Settings) -> bool:
    url = f"http://127.0.0.1:{getattr(settings, PORT_SETTINGS[service])}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as reply:
            return bool(reply.status == 200)
    except OSError:  # refused, timed out, or 503 (HTTPError is an OSError)
        return False


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if argv[:1] == ["--tcp"] and len(argv) == 2:
        return 0 if listening(int(argv[1])) else 1
    if len(argv) == 1 and argv[0] in PORT_SETTINGS:
        return 0 if ready(argv[0], Settings()) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
