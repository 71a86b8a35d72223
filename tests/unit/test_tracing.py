"""The trace context kept between the asynchronous steps (shared/tracing.py): stored as W3C headers and
resumed later, what starts then joins the trace; off, nothing is stored."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing


def test_outside_a_recorded_span_nothing_is_stored() -> None:
    assert tracing.carrier() is None
    with tracing.TRACER.start_as_current_span("no provider: a no-op span"):
        assert tracing.carrier() is None


def test_a_stored_context_resumed_later_continues_its_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("campaign start") as start:
        stored = tracing.carrier()
    assert stored is not None
    assert stored["traceparent"].split("-")[1] == f"{start.get_span_context().trace_id:032x}"

    with tracing.resumed(dict(stored)), tracer.start_as_current_span("SMTP RCPT DATA"):
        pass
    with tracer.start_as_current_span("unrelated"):
        pass
    spans = {span.name: span for span in exporter.get_finished_spans()}
    sent, root = spans["SMTP RCPT DATA"], spans["campaign start"]
    assert sent.context.trace_id == root.context.trace_id
    assert sent.parent is not None
    assert sent.parent.span_id == root.context.span_id
    assert spans["unrelated"].context.trace_id != root.context.trace_id  # resumed only within the block


def test_resuming_nothing_changes_nothing() -> None:
    with tracing.resumed(None):
        assert tracing.carrier() is None


def test_the_traces_path_follows_the_base_endpoint() -> None:
    assert tracing.traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
