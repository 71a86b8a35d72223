"""OpenTelemetry traces: off unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`).

One trace follows a campaign from the api's request that starts it to each SMTP transaction. The W3C trace
context travels in the message headers (FastStream's telemetry middleware injects and extracts them), but the
way is not one synchronous chain, so it is also stored where the work waits:
- an outbox row keeps the context of the transaction that wrote it, and the relay publishes it in that one;
- a campaign keeps the context in which the scheduler planned it, and every `SendMessage` dispatched for it,
  however much later, carries that one.

Off, nothing is installed: no provider, no middleware, no exporter thread; `carrier()` is one look-up of the
current span, and the spans around SMTP transactions are OpenTelemetry's no-op ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

TRACER = trace.get_tracer("maildash")
_PROPAGATOR = TraceContextTextMapPropagator()


def configure(endpoint: str | None, service: str) -> TracerProvider | None:
    """The process's tracer provider, exporting to `endpoint` over OTLP/HTTP; None (and nothing set up)
    without an endpoint. Its spans are named after the service (`maildash-api` …)."""
    if not endpoint:
        return None
    # Imported only when on (the SDK, and the exporter with protobuf and requests, take ~0.2 s).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"maildash-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
    trace.set_tracer_provider(provider)
    return provider


def traces_url(endpoint: str) -> str:
    """The signal's path under the base endpoint, as the OTLP specification has exporters build it."""
    return f"{endpoint.rstrip('/')}/v1/traces"


def carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers (`traceparent`, `tracestate`) to store; None outside a span
    that is recorded (always, while tracing is off)."""
    if not trace.get_current_span().is_recording():
        return None
    headers: dict[str, str] = {}
    _PROPAGATOR.inject(headers)
    return headers


@contextlib.contextmanager
def resumed(stored: dict[str, Any] | None) -> Iterator[None]:
    """Run a block in a stored trace context (a `carrier()`), so that what it starts joins that trace."""
    if not stored:
        yield
        return
    token = context.attach(_PROPAGATOR.extract(stored))
    try:
        yield
    finally:
        context.detach(token)
