"""Which of our processes holds a TCP connection: read from /proc (Linux), for fault tests that kill one."""

from __future__ import annotations

import os
from pathlib import Path


def socket_owner(local_port: int, remote_port: int, pids: list[int]) -> int:
    """The pid among `pids` whose socket goes from `local_port` to `remote_port` (the client side of a
    session). Both ports: one local port may serve several connections to different peers at once."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            ports = (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16))
            if ports == (local_port, remote_port):
                inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:  # closed while we looked
                continue
    raise LookupError(f"none of {pids} holds local port {local_port}")
