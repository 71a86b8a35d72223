"""dnsmasq, from Debian's packages, on a free loopback port, answering the records a test publishes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.smtp import free_port

DNSMASQ = shutil.which("dnsmasq", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
needs_dnsmasq = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed (make test installs it)")
TXT_STRING = 255  # the longest one string of a TXT record may be


@dataclass
class Zone:
    """What the server answers; any other name under `.example` or `.test` does not exist."""

    txt: dict[str, list[str]] = field(default_factory=dict)  # name → its TXT records
    mx: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # name → (preference, host)
    a: dict[str, str] = field(default_factory=dict)  # name → IPv4 address

    def config(self) -> str:
        lines = ["local=/example/", "local=/test/"]
        for name, values in self.txt.items():
            for value in values:
                chunks = [value[i : i + TXT_STRING] for i in range(0, len(value), TXT_STRING)] or [""]
                lines.append(f"txt-record={name}," + ",".join(f'"{chunk}"' for chunk in chunks))
        lines += [
            f"mx-host={name},{host},{preference}" for name, mx in self.mx.items() for preference, host in mx
        ]
        lines += [f"host-record={name},{address}" for name, address in self.a.items()]
        return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def running_dns(zone: Zone, directory: Path) -> AsyncIterator[str]:
    """Serve `zone`; yields the server as `Settings.dns_server` takes it ("127.0.0.1:<port>")."""
    assert DNSMASQ is not None, "needs_dnsmasq marks the tests that use this"
    port = free_port()
    config = directory / f"dnsmasq-{port}.conf"
    config.write_text(zone.config())
    process = await asyncio.create_subprocess_exec(
        DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
        "--listen-address=127.0.0.1", f"--port={port}", f"--conf-file={config}", "--user=root",
        "--pid-file=", "--log-facility=-",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await _until_listening(port, process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


async def _until_listening(port: int, process: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if process.returncode is not None:
            assert process.stderr is not None
            raise RuntimeError(f"dnsmasq stopped: {(await process.stderr.read()).decode()[-2000:]}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("dnsmasq did not listen within 4 s")
