"""Analysis may be lost, telemetry never: with otel-perf on, every span plain OpenTelemetry delivers
reaches the collector.

otel-perf holds a trace's spans until its local root ends and then hands them to the exporter's
`BatchSpanProcessor` all at once; its queue (OTEL_BSP_MAX_QUEUE_SIZE, 2048 by default) must not
overflow for it. Real parts: the collector binary (otlp receiver → file exporter), a FastAPI app
served by uvicorn under `opentelemetry-instrument`, default BSP settings.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel_perf.alerting.router import AlertRouter, RouterSettings
from otel_perf.processors import TraceAnalysisSpanProcessor
from otel_perf.processors.analysis import build_detectors
from otel_perf.processors.processor import ProcessorSettings
from otel_perf.settings import Settings
from tests.support.apps import RunningApp, start_app, wait_until
from tests.support.file_collector import FileCollector

APP_SOURCE = '''
import time

from fastapi import FastAPI
from opentelemetry import trace

app = FastAPI()
tracer = trace.get_tracer("span-delivery")


def make_spans(n: int, pace_ms: float) -> None:
    """n spans: groups of one parent and up to nine sibling children, each group doing `pace_ms` of
    work (a request doing real work, at a pace the exporter keeps up with)."""
    made = 0
    while made < n:
        with tracer.start_as_current_span("group"):
            made += 1
            for _ in range(min(9, n - made)):
                with tracer.start_as_current_span("leaf"):
                    pass
                made += 1
            time.sleep(pace_ms / 1000)


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@app.get("/spans/{n}")
def spans(n: int, pace_ms: float = 3.0) -> dict:
    make_spans(n, pace_ms)
    return {"trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x")}


@app.post("/flush")
def flush() -> dict:
    return {"flushed": trace.get_tracer_provider().force_flush()}
'''

ALERT_SPAN = "perf.alert"  # otel-perf's own addition, not a span plain OpenTelemetry would deliver


class Collector(FileCollector):
    """The real collector; counts the spans it received by trace id (from its file exporter)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.counts: Counter[str] = Counter()
        self._offset = 0

    def poll(self) -> Counter[str]:
        """Spans received so far, by trace id (new complete lines of the file exporter's output)."""
        spans, self._offset = self.all_spans(self._offset)
        self.counts.update(span["traceId"] for span in spans if span.get("name") != ALERT_SPAN)
        return self.counts

    def settle(self, trace_ids: list[str], expected: int | None, timeout: float = 15.0) -> int:
        """Spans of `trace_ids` received once everything sent arrived: the expected count, or a count
        unchanged for 2 s (what was dropped never comes)."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while True:
            counts = self.poll()
            got = sum(counts[trace_id] for trace_id in trace_ids)
            now = time.monotonic()
            if got != last:
                last, last_change = got, now
            if expected is not None and got >= expected:
                time.sleep(0.3)  # anything beyond the expected count would show here
                counts = self.poll()
                return sum(counts[trace_id] for trace_id in trace_ids)
            if now - last_change >= 2.0 or now > deadline:
                return got


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    running = Collector(tmp_path_factory.mktemp("collector"))
    yield running
    running.stop()


# (label, span counts of the requests sent at once)
SCENARIOS: list[tuple[str, tuple[int, ...]]] = [
    ("10", (10,)),
    ("1000", (1000,)),
    ("10000", (10000,)),
    ("2x3000 concurrent", (3000, 3000)),
]


def _start(workdir: Path, collector: Collector, env: dict[str, str]) -> RunningApp:
    workdir.mkdir(parents=True)
    (workdir / "main.py").write_text(APP_SOURCE)
    return start_app(
        workdir,
        command=[sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", "{port}"],
        seed=False,
        # Default BSP settings: no OTEL_BSP_* here.
        export={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        },
        env={"OTEL_SERVICE_NAME": "span-delivery", **env},
    )


def _deliver(app: RunningApp, collector: Collector, sizes: tuple[int, ...], per_request: int | None) -> int:
    """Send requests of `sizes` spans at once; the spans of their traces the collector received."""
    with httpx.Client(base_url=app.base_url, timeout=60) as client:
        with ThreadPoolExecutor(len(sizes)) as pool:
            responses = list(pool.map(lambda n: client.get(f"/spans/{n}"), sizes))
        trace_ids = []
        for response in responses:
            response.raise_for_status()
            trace_ids.append(response.json()["trace_id"])
        # Past otel-perf's grace, so its worker (not this flush) hands the spans on; the flush then
        # exports what the BSP still holds instead of waiting for its 5 s schedule.
        time.sleep(0.5)
        client.post("/flush").raise_for_status()
    expected = None if per_request is None else sum(sizes) + per_request * len(sizes)
    return collector.settle(trace_ids, expected)


def test_every_span_plain_opentelemetry_delivers_is_delivered(collector: Collector, tmp_path: Path) -> None:
    delivered: dict[str, dict[str, int]] = {}
    per_request: int | None = None  # spans the instrumentation adds to each request
    for mode, env in (
        ("off", {"OTEL_PERF_ENABLED": "false"}),
        # Every trace held and analysed (no CPU-share skipping): the path under test.
        ("on", {"OTEL_PERF_ANALYSIS_CPU_SHARE": "1"}),
    ):
        app = _start(tmp_path / mode, collector, env)
        try:
            delivered[mode] = {}
            for label, sizes in SCENARIOS:
                got = _deliver(app, collector, sizes, per_request)
                if per_request is None:  # the first plain request measures the instrumentation's spans
                    per_request = got - sum(sizes)
                    assert 1 <= per_request <= 5, f"{got} spans for a request making {sizes[0]}"
                delivered[mode][label] = got
        finally:
            app.stop()
        assert "Traceback" not in app.log(), app.log()[-4000:]
    assert per_request is not None
    expected = {label: sum(sizes) + per_request * len(sizes) for label, sizes in SCENARIOS}
    table = "\n".join(
        f"{label:>18}: expected {expected[label]:>6}, off {delivered['off'][label]:>6}, "
        f"on {delivered['on'][label]:>6}"
        for label, _ in SCENARIOS
    )
    print(f"spans delivered (instrumentation adds {per_request} per request):\n{table}")
    assert delivered["off"] == expected, f"plain OpenTelemetry lost spans:\n{table}"
    assert delivered["on"] == expected, f"otel-perf lost spans plain OpenTelemetry delivers:\n{table}"


# --- the same hand-over in-process: a real BatchSpanProcessor, exporters that are slow or dead -------


class SlowExporter(SpanExporter):
    """Takes `delay_s` per batch (a remote collector); `dead` blocks each export until released."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.exported = 0
        self.alive = threading.Event()
        self.alive.set()

    def export(self, spans: Any) -> SpanExportResult:
        self.alive.wait()
        time.sleep(self.delay_s)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.alive.set()


def _pipeline(export_processor: Any, **processor: Any) -> tuple[TracerProvider, TraceAnalysisSpanProcessor]:
    settings = Settings.from_env(
        processor=ProcessorSettings(trace_grace_ms=0, analysis_cpu_share=1.0, **processor)
    )
    analysis = TraceAnalysisSpanProcessor(
        settings.processor,
        detectors=build_detectors(settings.detectors),
        findings=AlertRouter(RouterSettings(), []),
        export_processor=export_processor,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "delivery"}), shutdown_on_exit=False)
    provider.add_span_processor(analysis)
    return provider, analysis


def _trace(provider: TracerProvider, spans: int, *, end_root: bool = True) -> Any:
    """A trace of `spans` spans (root included); the root left open unless `end_root`."""
    tracer = provider.get_tracer("delivery")
    root = tracer.start_span("GET /many", context=otel_context.Context())
    parent = trace.set_span_in_context(root)
    for _ in range(spans - 1):
        tracer.start_span("child", context=parent).end()
    if end_root:
        root.end()
    return root


def test_a_slow_exporter_gets_every_held_span() -> None:
    exporter = SlowExporter(delay_s=0.01)
    provider, analysis = _pipeline(BatchSpanProcessor(exporter))
    for _ in range(2):
        _trace(provider, 3000)
    assert provider.force_flush(30_000)
    assert exporter.exported == 6000
    assert analysis.stats.traces_analysed == 2
    provider.shutdown()


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's BSP, counting the spans handed to it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed = 0

    def on_end(self, span: Any) -> None:
        self.handed += 1
        super().on_end(span)


def test_a_dead_exporter_stalls_the_hand_over_no_longer_than_the_bound() -> None:
    exporter = SlowExporter()
    exporter.alive.clear()  # every export blocks: a collector that never answers
    bsp = CountingBatchSpanProcessor(exporter)
    provider, analysis = _pipeline(bsp, export_wait_s=0.5)
    started = time.monotonic()
    _trace(provider, 3000)
    wait_until(lambda: bsp.handed == 3000, timeout=10, what="the first trace handed over")
    first = time.monotonic() - started
    # The queue stays full: later traces don't wait again (the exporter drops, as it would without us).
    started = time.monotonic()
    for _ in range(3):
        _trace(provider, 1000)
    wait_until(lambda: bsp.handed == 6000, timeout=10, what="the later traces handed over")
    later = time.monotonic() - started
    assert 0.5 <= first < 3.0, first
    assert later < 0.5, later
    assert analysis.stats.traces_analysed == 4
    assert analysis.stats.export_waits_timed_out == 1
    exporter.alive.set()
    provider.shutdown()


def test_the_request_thread_never_waits_for_the_exporter() -> None:
    exporter = SlowExporter()
    exporter.alive.clear()
    provider, _ = _pipeline(BatchSpanProcessor(exporter), max_spans_per_trace=10)
    started = time.monotonic()
    root = _trace(provider, 5000, end_root=False)  # beyond 10 spans: straight to the (full) exporter
    assert time.monotonic() - started < 5.0
    root.end()
    exporter.alive.set()
    provider.shutdown()


def test_shutdown_delivers_10k_held_spans_to_a_real_collector(collector: Collector) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider, _ = _pipeline(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.endpoint, insecure=True)))
    # Two traces whose roots stay open: 2 x 5000 children held (max_spans_per_trace) until shutdown.
    roots = [_trace(provider, 5001, end_root=False) for _ in range(2)]
    trace_ids = [format(root.get_span_context().trace_id, "032x") for root in roots]
    started = time.monotonic()
    provider.shutdown()
    took = time.monotonic() - started
    assert collector.settle(trace_ids, 10_000) == 10_000
    assert took < 10, took  # within the processor's own shutdown bound
