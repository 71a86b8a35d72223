"""Do PostgreSQL and RabbitMQ answer? Start them when this machine can, else say exactly how.

`python -m tools.check_services [--start]`; exit 1 when one is still missing.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

from shared.settings import Settings

HOW_TO_START = {
    "PostgreSQL": (
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        "start PostgreSQL (Debian: `sudo pg_ctlcluster <version> main start`; Docker: "
        "`docker compose up -d postgres`), or point MAILDASH_DATABASE_URL at a running server",
    ),
    "RabbitMQ": (
        "rabbitmq-server -detached",
        "start RabbitMQ (Debian: `sudo rabbitmq-server -detached`; Docker: `docker compose up -d rabbitmq`), "
        "or point MAILDASH_AMQP_URL at a running broker",
    ),
}


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def try_start(command: str) -> None:
    if shutil.which(command.split()[0]) is None:
        return
    subprocess.run(command, shell=True, check=False, capture_output=True, timeout=120)  # noqa: S602


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--start", action="store_true", help="try to start a local service that does not answer"
    )
    args = parser.parse_args()
    settings = Settings()
    targets = {"PostgreSQL": urlsplit(settings.database_url), "RabbitMQ": urlsplit(settings.amqp_url)}
    missing = []
    for name, url in targets.items():
        host, port = url.hostname or "127.0.0.1", url.port or (5432 if name == "PostgreSQL" else 5672)
        if not answers(host, port) and args.start and host in ("127.0.0.1", "localhost"):
            print(f"{name} does not answer on {host}:{port}; starting it …", flush=True)
            try_start(HOW_TO_START[name][0])
            for _ in range(60):
                if answers(host, port):
                    break
                time.sleep(1)
        if answers(host, port):
            print(f"{name}: ok ({host}:{port})")
        else:
            missing.append(f"{name} does not answer on {host}:{port}: {HOW_TO_START[name][1]}.")
    for line in missing:
        print(f"error: {line}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
