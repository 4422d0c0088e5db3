"""Figure 4: analysis cost per span as traces grow (10 … 100k spans), memory per buffered span,
and memory under a flood of traces that never end.

Shapes: "bushy" (every parent has 10 children, half of them repeating one statement: N+1 work
everywhere), "wide" (one parent, all children), "deep" (a chain). Cost per span must stay flat:
no quadratic step anywhere.

    python -m benchmarks.scaling [--max-spans 100000]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from collections.abc import Sequence

import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from benchmarks.common import emit, machine
from otel_perf.alerting.router import AlertRouter
from otel_perf.processors import TraceAnalysisSpanProcessor
from otel_perf.processors.analysis import analyze_tree, build_detectors
from otel_perf.processors.processor import ProcessorSettings
from otel_perf.processors.sources import node_from_proto, spans_from_proto
from otel_perf.processors.tree import TraceTree
from otel_perf.settings import Settings

MS = 1_000_000
STATEMENT = KeyValue(key="db.statement", value=AnyValue(string_value="SELECT * FROM items WHERE id = ?"))
SYSTEM = KeyValue(key="db.system", value=AnyValue(string_value="postgresql"))


def build(shape: str, size: int) -> ExportTraceServiceRequest:
    trace_id = b"\x07" * 16
    spans = [
        Span(
            trace_id=trace_id,
            span_id=(1).to_bytes(8, "big"),
            name="GET /batch",
            kind=2,
            start_time_unix_nano=0,
            end_time_unix_nano=size * MS,
        )
    ]
    for number in range(2, size + 1):
        if shape == "wide":
            parent = 1
        elif shape == "deep":
            parent = number - 1
        else:
            parent = (number - 2) // 10 + 1
        repeated = number % 2 == 0
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=number.to_bytes(8, "big"),
                parent_span_id=parent.to_bytes(8, "big"),
                name="SELECT" if repeated else f"step {number % 7}",
                kind=3 if repeated else 1,
                start_time_unix_nano=number * MS,
                end_time_unix_nano=number * MS + MS // 2,
                attributes=[SYSTEM, STATEMENT] if repeated else [],
            )
        )
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


def analysis_us_per_span(request: ExportTraceServiceRequest, detectors: list) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        ((trace_id, spans),) = spans_from_proto(request).items()
        tree = TraceTree(trace_id, [node_from_proto(*span) for span in spans])
        analyze_tree(tree, detectors)
        best = min(best, time.perf_counter() - started)
    return best / len(request.resource_spans[0].scope_spans[0].spans) * 1e6


def held_processor(max_buffered: int) -> tuple[TracerProvider, TraceAnalysisSpanProcessor]:
    settings = Settings.from_env(
        processor=ProcessorSettings(
            trace_grace_ms=10**9,
            trace_timeout_s=10**6,
            max_buffered_spans=max_buffered,
            max_traces=10**6,
            max_spans_per_trace=10**8,
            analysis_cpu_share=1.0,
        )
    )
    processor = TraceAnalysisSpanProcessor(
        settings.processor,
        detectors=build_detectors(settings.detectors),
        findings=AlertRouter(settings.router, []),
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider, processor


def memory_per_buffered_span(spans: int) -> float:
    """Bytes held per span while a trace waits for its root (the spans themselves included)."""
    gc.collect()
    tracemalloc.start()
    provider, processor = held_processor(10**8)
    tracer = provider.get_tracer("bench")
    root = tracer.start_span("GET /never-ends", kind=SpanKind.SERVER)
    from opentelemetry import trace

    context = trace.set_span_in_context(root)
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(spans):
        child = tracer.start_span(
            "SELECT shop",
            kind=SpanKind.INTERNAL,
            context=context,
            attributes={"db.system": "postgresql", "db.statement": "SELECT 1"},
        )
        child.end()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert processor._buffered == spans
    return held / spans


def flood(traces: int, children: int) -> dict[str, object]:
    """Traces whose roots never end, with the shipped bounds (max_traces, max_buffered_spans):
    held spans stop at the bound and RSS stops growing (second half vs first half of the flood)."""
    settings = Settings.from_env(processor=ProcessorSettings(analysis_cpu_share=1.0))
    processor = TraceAnalysisSpanProcessor(
        settings.processor,
        detectors=build_detectors(settings.detectors),
        findings=AlertRouter(settings.router, []),
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    process = psutil.Process(os.getpid())
    from opentelemetry import trace

    def send(count: int) -> None:
        for _ in range(count):
            root = tracer.start_span("GET /stream", kind=SpanKind.SERVER)  # never ended, then forgotten
            context = trace.set_span_in_context(root)
            for _ in range(children):
                tracer.start_span(
                    "SELECT shop", context=context, attributes={"db.statement": "SELECT 1"}
                ).end()

    gc.collect()
    rss_start = process.memory_info().rss
    send(traces // 2)
    gc.collect()
    rss_half = process.memory_info().rss
    send(traces - traces // 2)
    gc.collect()
    rss_end = process.memory_info().rss
    config = settings.processor
    return {
        "spans_sent": traces * children,
        "traces_held": len(processor._traces),
        "spans_held": processor._buffered,
        "within_bounds": len(processor._traces) <= config.max_traces
        and processor._buffered <= config.max_buffered_spans,
        "rss_growth_first_half_mb": (rss_half - rss_start) / 2**20,
        "rss_growth_second_half_mb": (rss_end - rss_half) / 2**20,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-spans", type=int, default=100_000)
    parser.add_argument("--flood-traces", type=int, default=20_000)
    args = parser.parse_args(argv)
    detectors = build_detectors()
    sizes = [size for size in (10, 100, 1_000, 10_000, 100_000) if size <= args.max_spans]
    result: dict[str, object] = {}
    for shape in ("bushy", "wide", "deep"):
        per_size = {size: analysis_us_per_span(build(shape, size), detectors) for size in sizes}
        result[f"{shape}_us_per_span"] = per_size
        result[f"{shape}_largest_to_smallest"] = per_size[sizes[-1]] / per_size[sizes[0]]
    result["bytes_per_buffered_span"] = memory_per_buffered_span(min(20_000, args.max_spans))
    result["flood"] = flood(args.flood_traces, 10)
    emit("scaling", machine=machine(), **result)
    return result


if __name__ == "__main__":
    main()
