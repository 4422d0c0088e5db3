"""The cheap pre-check: a trace no detector could match is not built into a tree at all."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_perf.processors.analysis import worth_analysing
from otel_perf.processors.detectors import NPlusOneDetector, SlowSpanDetector
from otel_perf.processors.sources import shape_of_proto, spans_from_proto

MS = 1_000_000


def _trace(children: int, child_ms: float = 1.0) -> list:
    root = Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x00" * 7 + b"\x01",
        name="GET /x",
        kind=2,
        start_time_unix_nano=0,
        end_time_unix_nano=50 * MS,
    )
    kids = [
        Span(
            trace_id=b"\x01" * 16,
            span_id=b"\x01" * 7 + bytes([i]),
            parent_span_id=root.span_id,
            kind=3,
            name="SELECT",
            start_time_unix_nano=i * 2 * MS,
            end_time_unix_nano=int((i * 2 + child_ms) * MS),
        )
        for i in range(children)
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[root, *kids])])]
    )
    (spans,) = spans_from_proto(request).values()
    return spans


def test_shape_counts_client_siblings_and_the_longest_span() -> None:
    shape = shape_of_proto(_trace(6, child_ms=3))
    assert shape.spans == 7 and shape.max_client_siblings == 6 and shape.max_duration_ns == 50 * MS


def test_healthy_trace_is_not_worth_analysing_and_suspicious_ones_are() -> None:
    detectors = [NPlusOneDetector(), SlowSpanDetector()]
    assert not worth_analysing(shape_of_proto(_trace(4)), detectors)
    assert worth_analysing(shape_of_proto(_trace(5)), detectors)  # could be an N+1
    assert worth_analysing(shape_of_proto(_trace(1, child_ms=150)), detectors)  # could be a slow query


def test_a_detector_without_could_match_always_runs() -> None:
    class Custom:
        name = "custom"

        def detect(self, tree):  # type: ignore[no-untyped-def]
            return []

    assert worth_analysing(shape_of_proto(_trace(1)), [Custom()])
