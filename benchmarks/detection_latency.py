"""Figure 5: detection latency.

In-process: from the end of a request's local root span to the alert in a sink (the shipped
grace for stragglers included). Collector-side: from the moment the analyzer accepted a trace's
last span to the alert in its file sink (the collector's groupbytrace wait excluded: traces are
sent straight to the analyzer, with its default `trace_wait_ms`).

    python -m benchmarks.detection_latency [--samples 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from benchmarks.analyzer_throughput import EXPORT
from benchmarks.common import emit, machine, median
from benchmarks.otlp_load import requests
from benchmarks.processes import analyzer, sink_collector
from otel_perf.alerting.router import AlertRouter, RouterSettings
from otel_perf.processors import TraceAnalysisSpanProcessor
from otel_perf.processors.analysis import build_detectors
from otel_perf.settings import Settings


class _Drop(SpanExporter):
    def export(self, spans):  # type: ignore[no-untyped-def]
        return SpanExportResult.SUCCESS


class _TimingSink:
    name = "timing"

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.arrived = threading.Event()

    def send(self, alert) -> None:  # type: ignore[no-untyped-def]
        self.arrivals.append(time.perf_counter())
        self.arrived.set()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def in_process(samples: int) -> list[float]:
    sink = _TimingSink()
    settings = Settings.from_env()  # shipped defaults: 100 ms grace
    router = AlertRouter(RouterSettings(cooldown_s=0, max_per_hour=10**6), [sink])
    processor = TraceAnalysisSpanProcessor(
        settings.processor,
        detectors=build_detectors(settings.detectors),
        findings=router,
        export_processor=SimpleSpanProcessor(_Drop()),
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("bench")
    latencies = []
    for number in range(samples):
        sink.arrived.clear()
        with tracer.start_as_current_span(f"GET /orders/{number}", kind=SpanKind.SERVER):
            for item in range(10):
                span = tracer.start_span("SELECT shop", kind=SpanKind.CLIENT)
                span.set_attributes(
                    {"db.system": "sqlite", "db.statement": f"SELECT * FROM t WHERE id = {item}"}
                )
                span.end()
        ended = time.perf_counter()
        assert sink.arrived.wait(5), "no alert"
        latencies.append((sink.arrivals[-1] - ended) * 1000)
        time.sleep(0.02)
    provider.shutdown()
    return latencies


def collector_side(samples: int) -> list[float]:
    latencies = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        alerts = workdir / "analyzer-alerts.jsonl"
        with (
            sink_collector(workdir) as (sink_port, _),
            analyzer(
                workdir, sink_port, OTEL_PERF_ALERTS_COOLDOWN_S="0", OTEL_PERF_ALERTS_MAX_PER_HOUR="1000000"
            ) as (grpc_port, _, _),
        ):
            channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            export = channel.unary_unary(EXPORT)
            payloads = requests(samples, traces_per_request=1, n_plus_one_share=1.0, seed=11)
            for payload in payloads:
                seen = len(alerts.read_text().splitlines()) if alerts.exists() else 0
                accepted = time.perf_counter()  # the reply waits for analysis: time from the send
                export(payload, timeout=10)
                while not alerts.exists() or len(alerts.read_text().splitlines()) <= seen:
                    time.sleep(0.002)
                latencies.append((time.perf_counter() - accepted) * 1000)
            channel.close()
            json.loads(alerts.read_text().splitlines()[-1])  # a whole line was written
    return latencies


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args(argv)
    local, remote = in_process(args.samples), collector_side(args.samples)
    settings = Settings.from_env()
    result = {
        "in_process_p50_ms": median(local),
        "in_process_max_ms": max(local),
        "in_process_grace_ms": settings.processor.trace_grace_ms,
        "collector_side_p50_ms": median(remote),
        "collector_side_max_ms": max(remote),
        "analyzer_trace_wait_ms": settings.analyzer.trace_wait_ms,
    }
    emit("detection_latency", machine=machine(), samples=args.samples, **result)
    return result


if __name__ == "__main__":
    main()
