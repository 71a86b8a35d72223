"""An OTLP/HTTP receiver of traces in the test's process: the services, subprocesses, export their spans to
it as to any collector, and it keeps them in memory for the test to read."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.smtp import free_port


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a trace's root
    attributes: dict[str, str]  # the string-valued ones


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.url = ""

    async def traces(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            attributes = _strings(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(
                    ReceivedSpan(
                        attributes.get("service.name", ""),
                        span.name,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        _strings(span.attributes),
                    )
                    for span in scope_spans.spans
                )
        reply = ExportTraceServiceResponse().SerializeToString()
        return Response(reply, media_type="application/x-protobuf")

    async def wait_for(self, found: Callable[[ReceivedSpan], bool], timeout: float = 30.0) -> ReceivedSpan:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            span = next((span for span in self.spans if found(span)), None)
            if span is not None:
                return span
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no such span within {timeout} s among {self.spans}")
            await asyncio.sleep(0.1)

    def ancestry(self, span: ReceivedSpan) -> list[ReceivedSpan]:
        """The span, its parent, its parent's parent … up to the first one whose parent was not received."""
        by_id = {(s.trace_id, s.span_id): s for s in self.spans}
        chain = [span]
        while (parent := by_id.get((chain[-1].trace_id, chain[-1].parent_id))) is not None:
            chain.append(parent)
        return chain


def _strings(attributes: Any) -> dict[str, str]:
    return {a.key: a.value.string_value for a in attributes if a.value.HasField("string_value")}


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    port = free_port()
    app = Starlette(routes=[Route("/v1/traces", receiver.traces, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn says so by this flag only)
        await asyncio.sleep(0.01)
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
