"""Run services for tests: as subprocesses (`python -m services.<name>`, as in production) or in-process
(uvicorn in this event loop, for tests that need to reach inside). Both serve real HTTP on free ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from shared.settings import Settings
from tests.support.smtp import free_port
from tools.healthcheck import PORT_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
# How each is started, where that is not `python -m services.<name>`.
COMMANDS = {"inbox": ["services.tracker", "inbox"]}


def settings_env(settings: Settings) -> dict[str, str]:
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        env[f"MAILDASH_{name.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return env


def with_ports(settings: Settings, *names: str) -> Settings:
    """A copy with a free port for each named service (and the tracker URL to match)."""
    ports = {PORT_SETTINGS[name]: free_port() for name in names}
    if "tracker_port" in ports:
        ports["public_tracker_url"] = f"http://127.0.0.1:{ports['tracker_port']}"  # type: ignore[assignment]
    return settings.model_copy(update=ports)


async def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{url} did not become ready within {timeout} s")
            await asyncio.sleep(0.1)


@dataclass
class ServiceProcess:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The structured events named `event` logged so far, by a service started with `log_format=json`."""
        records = (json.loads(line) for line in self.log().splitlines() if line.startswith("{"))
        return [record for record in records if record.get("event") == event]

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


@contextlib.asynccontextmanager
async def subprocess_service(
    name: str, settings: Settings, log_dir: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[ServiceProcess]:
    port = getattr(settings, PORT_SETTINGS[name])
    log_path = log_dir / f"{name}-{port}.log"
    env = {**os.environ, **settings_env(settings), **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", *COMMANDS.get(name, [f"services.{name}"])],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = ServiceProcess(name, f"http://127.0.0.1:{port}", process, log_path)
    try:
        try:
            await wait_ready(service.url)
        except AssertionError as error:
            raise AssertionError(f"{error}; its log ends:\n{service.log()[-3000:]}") from error
        yield service
    finally:
        await asyncio.to_thread(service.terminate)


@contextlib.asynccontextmanager
async def inprocess_service(
    create_app: Callable[..., Any], settings: Settings, port: int, **kwargs: Any
) -> AsyncIterator[str]:
    config = uvicorn.Config(
        create_app(settings, **kwargs), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url)
        # Ready, but ours? A server that could not bind has ended, and what answered is someone else's.
        if task.done() or not server.started:
            raise AssertionError(f"{create_app.__module__} could not serve on {url}")
        yield url
    finally:
        server.should_exit = True
        await task
