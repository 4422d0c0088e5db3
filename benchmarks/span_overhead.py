"""Figure 1: per-span cost of TraceAnalysisSpanProcessor on request-shaped trees.

Three variants, interleaved: the SDK alone; otel-perf with its default CPU share for analysis
(`OTEL_PERF_ANALYSIS_CPU_SHARE`, the shipped configuration); otel-perf analysing every trace
(share 1, the worst case).

A TracerProvider with a BatchSpanProcessor and a dropping exporter, without and with otel-perf in
front of it. Each tree: a server span, 2 internal spans, 20 DB client spans with one repeated
statement (an N+1, so detection and annotation run), each DB span started beneath 30 library
frames (as SQLAlchemy's would be). Reported: the request thread's time per span (what the user's
request pays) and the process CPU per span including the analysis worker, after a flush.

    python -m benchmarks.span_overhead [--trees 2000 --rounds 7]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from benchmarks.common import emit, interleaved, library_frames, machine, median
from otel_perf.alerting.router import AlertRouter
from otel_perf.processors import TraceAnalysisSpanProcessor
from otel_perf.processors.analysis import build_detectors
from otel_perf.processors.processor import ProcessorSettings
from otel_perf.settings import Settings

DB_SPANS, INTERNAL_SPANS = 20, 2
SPANS_PER_TREE = 1 + INTERNAL_SPANS + DB_SPANS


class DroppingExporter(SpanExporter):
    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def build_provider(cpu_share: float | None) -> tuple[TracerProvider, DroppingExporter]:
    """The SDK alone (`cpu_share` None) or with otel-perf analysing at most that CPU share."""
    exporter = DroppingExporter()
    # A queue large enough that nothing is dropped: both variants export every span.
    batch = BatchSpanProcessor(exporter, max_queue_size=1_000_000, schedule_delay_millis=200)
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    if cpu_share is not None:
        settings = Settings.from_env(
            processor=ProcessorSettings(
                trace_grace_ms=0, max_buffered_spans=10_000_000, analysis_cpu_share=cpu_share
            )
        )
        provider.add_span_processor(
            TraceAnalysisSpanProcessor(
                settings.processor,
                detectors=build_detectors(settings.detectors),
                findings=AlertRouter(settings.router, []),
                export_processor=batch,
            )
        )
    else:
        provider.add_span_processor(batch)
    return provider, exporter


def request_tree(tracer: trace.Tracer, number: int, db_call) -> None:
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as root:
        root.set_attributes(
            {"http.route": "/orders", "http.request.method": "GET", "http.response.status_code": 200}
        )
        with tracer.start_as_current_span("authenticate"):
            pass
        for item in range(DB_SPANS):
            db_call(tracer, number * 100 + item)
        with tracer.start_as_current_span("serialize"):
            pass


def _query(tracer: trace.Tracer, customer: int) -> None:
    span = tracer.start_span("SELECT shop", kind=SpanKind.CLIENT)
    # Like the SQLAlchemy instrumentation: attributes set right after start.
    span.set_attributes(
        {
            "db.system": "postgresql",
            "db.name": "shop",
            "db.statement": "SELECT customers.id, customers.name FROM customers WHERE id = %(pk_1)s",
        }
    )
    span.end()


def run(cpu_share: float | None, trees: int, depth: int) -> tuple[float, float]:
    """(request-thread seconds per span, process CPU seconds per span)."""
    provider, exporter = build_provider(cpu_share)
    tracer = provider.get_tracer("bench")

    beneath_library = library_frames(depth)

    def db_call(tracer: trace.Tracer, customer: int) -> None:
        beneath_library(lambda: _query(tracer, customer))

    request_tree(tracer, 0, db_call)  # warm caches (normalisation, code classification)
    provider.force_flush()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for number in range(trees):
        request_tree(tracer, number, db_call)
    wall = time.perf_counter() - wall_start
    provider.force_flush()
    cpu = time.process_time() - cpu_start
    provider.shutdown()
    assert exporter.exported == (trees + 1) * SPANS_PER_TREE, exporter.exported
    spans = trees * SPANS_PER_TREE
    return wall / spans, cpu / spans


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--depth", type=int, default=30, help="library frames above each DB span start")
    args = parser.parse_args(argv)
    default_share = ProcessorSettings.model_fields["analysis_cpu_share"].default
    variants = {"sdk": None, "otel_perf": default_share, "otel_perf_every_trace": 1.0}
    cpu: dict[str, list[float]] = {name: [] for name in variants}

    def variant(name: str, share: float | None):
        def once() -> float:
            wall, cpu_per_span = run(share, args.trees, args.depth)
            cpu[name].append(cpu_per_span)
            return wall

        return once

    walls = interleaved({name: variant(name, share) for name, share in variants.items()}, args.rounds)
    result: dict[str, float] = {}
    for name in variants:
        result[f"request_path_us_per_span_{name}"] = median(walls[name]) * 1e6
        result[f"cpu_us_per_span_{name}"] = median(cpu[name]) * 1e6
    for name in ("otel_perf", "otel_perf_every_trace"):
        result[f"request_path_ratio_{name}"] = median(walls[name]) / median(walls["sdk"])
        result[f"cpu_ratio_{name}"] = median(cpu[name]) / median(cpu["sdk"])
    emit(
        "span_overhead",
        machine=machine(),
        trees=args.trees,
        rounds=args.rounds,
        depth=args.depth,
        default_cpu_share=default_share,
        **result,
    )
    return result


if __name__ == "__main__":
    main()
