"""The engine both hosts share: the hold-until-due buffer, and the analyse step over either adapter."""

from __future__ import annotations

import threading
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_perf.processors import semconv
from otel_perf.processors.analysis import analyse_trace
from otel_perf.processors.detectors import NPlusOneDetector, NPlusOneSettings
from otel_perf.processors.engine import (
    OVER_MAX_BUFFERED_SPANS,
    OVER_MAX_SPANS_PER_TRACE,
    EngineStats,
    Held,
    HoldBuffer,
)
from otel_perf.processors.sources import PROTO, READABLE, any_value, spans_from_proto


class Recorder:
    """A host's release: records what it got, and whether the engine's lock was free meanwhile."""

    def __init__(self) -> None:
        self.released: list[tuple[int, list[str], float | None]] = []
        self.lock_free: list[bool] = []
        self.threads: set[str] = set()
        self.engine: HoldBuffer[str, None] | None = None
        self.done = threading.Event()

    def __call__(self, trace_id: int, held: Held[str, None], deadline: float | None) -> None:
        assert self.engine is not None
        free = self.engine.lock.acquire(blocking=False)
        if free:
            self.engine.lock.release()
        self.lock_free.append(free)
        self.threads.add(threading.current_thread().name)
        self.released.append((trace_id, list(held.spans), deadline))
        self.done.set()


def engine(recorder: Recorder, **bounds: Any) -> HoldBuffer[str, None]:
    bounds.setdefault("delay_s", 0.05)
    made: HoldBuffer[str, None] = HoldBuffer(recorder, EngineStats(), thread_name="test-engine", **bounds)
    recorder.engine = made
    return made


def hold(buffer: HoldBuffer[str, None], trace_id: int, *spans: str, schedule: bool = True) -> None:
    with buffer.lock:
        held = buffer.traces.get(trace_id) or buffer.open(trace_id, None)
        for span in spans:
            assert buffer.add(held, span) is None
        if schedule:
            buffer.schedule(trace_id, held)


def wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_scheduled_trace_is_released_after_its_delay_on_the_worker_outside_the_lock() -> None:
    recorder = Recorder()
    buffer = engine(recorder)
    assert not buffer.worker_started  # lazily: nothing held, no thread
    started = time.monotonic()
    hold(buffer, 1, "a", "b")
    assert recorder.done.wait(5)
    assert time.monotonic() - started >= 0.05
    assert recorder.released == [(1, ["a", "b"], None)]
    assert recorder.lock_free == [True]
    assert recorder.threads == {"test-engine"}
    assert buffer.buffered == 0 and not buffer.traces
    assert (buffer.stats.traces_held, buffer.stats.spans_held) == (1, 2)
    buffer.stop(5)


def test_scheduling_again_moves_the_due_time_and_release_follows_due_order() -> None:
    recorder = Recorder()
    buffer = engine(recorder, delay_s=0.2)
    hold(buffer, 1, "a")
    hold(buffer, 2, "b")
    time.sleep(0.1)
    hold(buffer, 1, "c")  # more of trace 1: due 0.2 s from now, after trace 2
    wait_for(lambda: len(recorder.released) == 2)
    assert [(trace_id, spans) for trace_id, spans, _ in recorder.released] == [(2, ["b"]), (1, ["a", "c"])]
    buffer.stop(5)


def test_bounds_name_what_would_be_exceeded_and_hold_nothing_beyond() -> None:
    buffer = engine(Recorder(), max_traces=2, max_spans_per_trace=2, max_buffered_spans=3)
    with buffer.lock:
        first = buffer.open(1, None)
        assert [buffer.add(first, span) for span in "abc"] == [None, None, OVER_MAX_SPANS_PER_TRACE]
        assert not buffer.full()
        second = buffer.open(2, None)
        assert buffer.full()
        assert [buffer.add(second, span) for span in "de"] == [None, OVER_MAX_BUFFERED_SPANS]
    assert buffer.buffered == 3 and first.spans == ["a", "b"] and second.spans == ["d"]
    assert buffer.fits(0) and not buffer.fits(1)
    buffer.stats.count_unanalysed(OVER_MAX_BUFFERED_SPANS, 2)
    buffer.stats.count_unanalysed(OVER_MAX_SPANS_PER_TRACE)
    assert buffer.stats.spans_unanalysed == 3
    assert buffer.stats.unanalysed == {OVER_MAX_BUFFERED_SPANS: 2, OVER_MAX_SPANS_PER_TRACE: 1}


def test_a_trace_never_scheduled_is_released_at_the_maximum_hold_and_counted() -> None:
    recorder = Recorder()
    buffer = engine(recorder, max_hold_s=0.05)
    hold(buffer, 7, "a", schedule=False)
    with buffer.lock:
        buffer.ensure_worker()
    assert recorder.done.wait(5)  # the scan for held-too-long traces runs about once a second
    assert recorder.released == [(7, ["a"], None)]
    assert buffer.stats.traces_timed_out == 1
    buffer.stop(5)


def test_drain_releases_everything_held_on_the_calling_thread_with_the_deadline() -> None:
    recorder = Recorder()
    buffer = engine(recorder, delay_s=60)
    hold(buffer, 1, "a")
    hold(buffer, 2, "b", schedule=False)
    deadline = time.monotonic() + 5
    assert buffer.drain(deadline)
    assert sorted(recorder.released) == [(1, ["a"], deadline), (2, ["b"], deadline)]
    assert threading.current_thread().name in recorder.threads
    assert buffer.stats.traces_timed_out == 0  # drained, not timed out
    buffer.stop(5)
    assert not buffer.worker_alive


def test_drain_waits_for_the_worker_until_the_deadline() -> None:
    entered, proceed = threading.Event(), threading.Event()

    def slow(trace_id: int, held: Held[str, None], deadline: float | None) -> None:
        entered.set()
        proceed.wait(5)

    buffer: HoldBuffer[str, None] = HoldBuffer(slow, EngineStats(), delay_s=0)
    hold(buffer, 1, "a")
    assert entered.wait(5)
    assert not buffer.drain(time.monotonic() + 0.05)  # the worker still releases trace 1
    proceed.set()
    assert buffer.drain(time.monotonic() + 5)
    buffer.stop(5)


def test_a_forked_child_starts_with_an_empty_buffer_and_the_hosts_own_reinit() -> None:
    reinit: list[bool] = []
    recorder = Recorder()
    buffer: HoldBuffer[str, None] = HoldBuffer(
        recorder, EngineStats(), delay_s=60, after_fork=lambda: reinit.append(True)
    )
    recorder.engine = buffer
    hold(buffer, 1, "a", schedule=False)  # no worker: a forked child has none of its parent's threads
    old_lock = buffer.lock
    buffer._reinit_in_child()  # what os.register_at_fork runs in the child
    assert reinit == [True]
    assert buffer.lock is not old_lock and not old_lock.locked()
    assert not buffer.traces and buffer.buffered == 0 and not buffer.worker_started


# --- the analyse step: both adapters, the same annotations -----------------------------------------


def _n_plus_one_spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("unit")
    with tracer.start_as_current_span(
        "GET /authors",
        kind=SpanKind.SERVER,
        attributes={"http.route": "/authors", "http.request.method": "GET"},
    ):
        for i in range(6):
            with tracer.start_as_current_span(
                "SELECT",
                kind=SpanKind.CLIENT,
                attributes={"db.system": "sqlite", "db.statement": f"SELECT * FROM books WHERE author = {i}"},
            ):
                time.sleep(0.001)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_both_adapters_find_the_same_and_write_the_same_attributes() -> None:
    detectors = [NPlusOneDetector(NPlusOneSettings(min_repeats=5))]
    readable = _n_plus_one_spans()
    ((trace_id, proto),) = spans_from_proto(encode_spans(readable)).items()  # before annotation
    sdk_stats, proto_stats = EngineStats(), EngineStats()

    in_process = analyse_trace(readable[0].context.trace_id, readable, READABLE, detectors, sdk_stats)
    collector = analyse_trace(trace_id, proto, PROTO, detectors, proto_stats, source="collector")

    assert [finding.fingerprint for finding in in_process] == [finding.fingerprint for finding in collector]
    assert [finding.source for finding in in_process + collector] == ["in_process", "collector"]
    for stats in (sdk_stats, proto_stats):
        assert (stats.traces_analysed, stats.spans_analysed, stats.findings, stats.analysis_errors) == (
            1,
            7,
            1,
            0,
        )
    keys = (semconv.PERF_ISSUE, semconv.PERF_FINGERPRINT, semconv.PERF_ISSUES)
    sdk_marks = [
        {key: span.attributes[key] for key in keys if key in (span.attributes or {})}
        for span in readable
        if span.name == "SELECT"
    ]
    proto_marks = [
        {kv.key: any_value(kv.value) for kv in span.attributes if kv.key in keys}
        for span, *_ in proto
        if span.name == "SELECT"
    ]
    assert sdk_marks == proto_marks
    assert sdk_marks[0] == {
        semconv.PERF_ISSUE: "n_plus_one",
        semconv.PERF_FINGERPRINT: in_process[0].fingerprint,
    }


def test_a_failed_analysis_is_counted_and_never_raised() -> None:
    class Broken:
        @staticmethod
        def shape(spans: Any) -> Any:
            raise RuntimeError("boom")

    stats = EngineStats()
    assert analyse_trace(1, ["a"], Broken(), [], stats) == []  # type: ignore[arg-type]
    assert (stats.analysis_errors, stats.traces_analysed) == (1, 0)


# --- one vocabulary: the processor's counters as OpenTelemetry metrics ------------------------------


def test_self_metrics_keep_their_names_and_split_merged_counts_by_reason() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_perf.alerting.router import RouterStats
    from otel_perf.bootstrap import self_metrics
    from otel_perf.processors.monitors.watcher import WatcherStats
    from otel_perf.processors.processor import SKIPPED_CPU_SHARE, ProcessorStats

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    stats = ProcessorStats()
    stats.count_unanalysed(OVER_MAX_BUFFERED_SPANS, 3)
    stats.count_skipped(SKIPPED_CPU_SHARE)
    stats.traces_analysed = 2
    original = self_metrics.metrics.get_meter
    self_metrics.metrics.get_meter = provider.get_meter  # type: ignore[method-assign]
    try:
        watched = WatcherStats(requests=7, dropped_late=2)
        self_metrics.register_self_metrics(stats, RouterStats(), watched)
    finally:
        self_metrics.metrics.get_meter = original  # type: ignore[method-assign]
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {
        metric.name: metric
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    for name in (
        "otel_perf.traces.analysed",
        "otel_perf.spans.analysed",
        "otel_perf.spans.unanalysed",
        "otel_perf.traces.skipped",
        "otel_perf.findings",
        "otel_perf.export.waits_timed_out",
        "otel_perf.alerts.sent",
        "otel_perf.alerts.suppressed",
        "otel_perf.traces.held",
        "otel_perf.traces.timed_out",
        "otel_perf.analysis.errors",
        "otel_perf.monitor.requests",
        "otel_perf.monitor.dropped",
        "otel_perf.monitor.windows_judged",
    ):
        assert name in metrics, name
    dropped = {
        point.attributes.get("reason"): point.value
        for point in metrics["otel_perf.monitor.dropped"].data.data_points  # type: ignore[union-attr]
    }
    assert dropped == {"max_pending": 0, "late": 2, "max_series": 0}
    assert metrics["otel_perf.traces.analysed"].unit == "{trace}"
    points = {
        point.attributes.get("reason"): point.value
        for point in metrics["otel_perf.spans.unanalysed"].data.data_points  # type: ignore[union-attr]
    }
    assert points == {OVER_MAX_BUFFERED_SPANS: 3, OVER_MAX_SPANS_PER_TRACE: 0}
    skipped = {
        point.attributes.get("reason"): point.value
        for point in metrics["otel_perf.traces.skipped"].data.data_points  # type: ignore[union-attr]
    }
    assert skipped == {"max_traces": 0, SKIPPED_CPU_SHARE: 1}
    provider.shutdown()
