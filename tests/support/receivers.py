"""Real HTTP receivers for webhook tests, each on its own local port: one that answers 2xx, one that fails
every other request, one that never answers, a slow one. Each keeps every request it got."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

Behaviour = Literal["ok", "flaky", "failing", "hanging", "slow"]


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    status: int | None  # what it was answered (None: never)

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    behaviour: Behaviour
    slow_seconds: float = 0.5
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self, campaign_ids: set[str] | None = None) -> list[tuple[str, str]]:
        """(type, campaign id) of each request answered 2xx, in the order they came; only those about the
        named campaigns when given."""
        found = [
            (r.event["type"], r.event["data"].get("campaign_id", ""))
            for r in self.requests
            if r.status is not None and r.status < 300
        ]
        return [(kind, c) for kind, c in found if campaign_ids is None or c in campaign_ids]

    def _status(self) -> int | None:
        if self.behaviour == "hanging":
            return None
        if self.behaviour == "failing" or (self.behaviour == "flaky" and len(self.requests) % 2 == 0):
            return 500
        return 204

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                fields = (line.partition(":") for line in lines if line)
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self._status()
                self.requests.append(Request(headers, body, status))
                if status is None:
                    await asyncio.sleep(3600)  # until the caller gives up and the test ends
                if self.behaviour == "slow":
                    await asyncio.sleep(self.slow_seconds)
                body = b"" if status == 204 else b"failed"  # a 204 has no body
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def receiving(*behaviours: Behaviour) -> AsyncIterator[list[Receiver]]:
    receivers = [Receiver(behaviour) for behaviour in behaviours]
    servers = []
    try:
        for receiver in receivers:
            server = await asyncio.start_server(receiver._serve, "127.0.0.1", 0)
            receiver.port = server.sockets[0].getsockname()[1]
            servers.append(server)
        yield receivers
    finally:
        for server in servers:
            server.close()
        for receiver in receivers:
            for connection in receiver.connections:
                connection.cancel()
