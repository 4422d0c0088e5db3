"""TraceAnalysisSpanProcessor in a real SDK TracerProvider: spans are annotated and always exported."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from otel_perf.alerting.router import AlertRouter, RouterSettings
from otel_perf.processors import TraceAnalysisSpanProcessor
from otel_perf.processors.analysis import build_detectors
from otel_perf.processors.detectors import NPlusOneDetector, NPlusOneSettings
from otel_perf.processors.detectors.unused_eager_load import UnusedEagerLoadSettings
from otel_perf.processors.processor import ProcessorSettings
from otel_perf.settings import Settings
from tests.unit.builders import RecordingSink


class Harness:
    def __init__(
        self, *, detectors: list | None = None, eager_min_requests: int = 1, **processor: Any
    ) -> None:
        self.exporter = InMemorySpanExporter()
        self.sink = RecordingSink()
        processor.setdefault("trace_grace_ms", 0)
        processor.setdefault("analysis_cpu_share", 1.0)  # these tests are about analysis, not its budget
        settings = Settings.from_env(
            n_plus_one=NPlusOneSettings(min_repeats=5),
            # Each request judged on its own, unless a test is about the count across requests.
            unused_eager_load=UnusedEagerLoadSettings(min_requests=eager_min_requests),
            processor=ProcessorSettings(**processor),
        )
        self.processor = TraceAnalysisSpanProcessor(
            settings.processor,
            detectors=detectors if detectors is not None else build_detectors(settings.detectors),
            findings=AlertRouter(RouterSettings(), [self.sink]),
            export_processor=SimpleSpanProcessor(self.exporter),
        )
        self.provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("unit")

    def flush(self) -> dict[str, list[ReadableSpan]]:
        assert self.provider.force_flush(10_000)
        by_name: dict[str, list[ReadableSpan]] = {}
        for span in self.exporter.get_finished_spans():
            by_name.setdefault(span.name, []).append(span)
        return by_name

    def request_with_queries(self, count: int = 6, name: str = "GET /authors", **start: Any) -> None:
        with self.tracer.start_as_current_span(name, kind=SpanKind.SERVER, **start):
            for i in range(count):
                with self.tracer.start_as_current_span(
                    "SELECT",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "db.system": "sqlite",
                        "db.statement": f"SELECT * FROM authors WHERE id = {i}",
                    },
                ):
                    pass


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.provider.shutdown()


def test_n_plus_one_spans_are_annotated_exported_and_alerted(harness: Harness) -> None:
    harness.request_with_queries(6)
    spans = harness.flush()
    assert len(spans["GET /authors"]) == 1
    queries = spans["SELECT"]
    assert len(queries) == 6
    issues = {span.attributes.get("perf.issue") for span in queries}
    fingerprints = {span.attributes.get("perf.issue.fingerprint") for span in queries}
    assert issues == {"n_plus_one"}
    assert len(fingerprints) == 1 and None not in fingerprints
    assert "perf.issue" not in spans["GET /authors"][0].attributes
    [alert] = harness.sink.alerts
    assert alert.finding.type == "n_plus_one"
    assert alert.finding.fingerprint == fingerprints.pop()
    assert alert.finding.operation == "GET /authors"
    assert alert.finding.details["statement"] == "SELECT * FROM authors WHERE id = ?"
    assert alert.finding.details["count"] == 6
    assert harness.processor.stats.traces_analysed == 1
    assert harness.processor.stats.spans_unanalysed == 0


def test_no_finding_no_annotation(harness: Harness) -> None:
    harness.request_with_queries(3)
    spans = harness.flush()
    assert len(spans["SELECT"]) == 3
    assert all("perf.issue" not in span.attributes for span in spans["SELECT"])
    assert harness.sink.alerts == []


def test_spans_exported_when_max_traces_is_hit() -> None:
    harness = Harness(max_traces=1)
    tracer = harness.tracer
    first = tracer.start_span("GET /first", kind=SpanKind.SERVER, context=otel_context.Context())
    second = tracer.start_span("GET /second", kind=SpanKind.SERVER, context=otel_context.Context())
    for root in (first, second):
        parent = trace.set_span_in_context(root)
        for i in range(6):
            tracer.start_span(
                "SELECT",
                kind=SpanKind.CLIENT,
                context=parent,
                attributes={"db.statement": f"SELECT * FROM t WHERE id = {i}"},
            ).end()
    second.end()
    first.end()
    spans = harness.flush()
    assert len(spans["GET /first"]) == 1 and len(spans["GET /second"]) == 1
    assert len(spans["SELECT"]) == 12
    assert harness.processor.stats.traces_skipped == 1  # the second trace: exported, not analysed
    flagged = [s for s in spans["SELECT"] if s.attributes.get("perf.issue") == "n_plus_one"]
    assert {s.context.trace_id for s in flagged} == {first.get_span_context().trace_id}
    harness.provider.shutdown()


def test_spans_exported_when_max_spans_per_trace_is_hit() -> None:
    harness = Harness(max_spans_per_trace=3)
    harness.request_with_queries(6)
    spans = harness.flush()
    assert len(spans["SELECT"]) == 6
    assert len(spans["GET /authors"]) == 1
    assert harness.processor.stats.spans_unanalysed == 4
    harness.provider.shutdown()


class ExplodingDetector:
    name = "exploding"

    def detect(self, tree: Any) -> Any:
        yield from ()
        raise RuntimeError("detector bug")


def test_a_raising_detector_does_not_stop_export_or_other_detectors() -> None:
    harness = Harness(detectors=[ExplodingDetector(), NPlusOneDetector(NPlusOneSettings())])
    harness.request_with_queries(6)
    spans = harness.flush()
    assert len(spans["SELECT"]) == 6 and len(spans["GET /authors"]) == 1
    assert {s.attributes.get("perf.issue") for s in spans["SELECT"]} == {"n_plus_one"}
    assert [a.finding.type for a in harness.sink.alerts] == ["n_plus_one"]
    harness.provider.shutdown()


def test_collector_mode_passes_spans_through_unanalysed() -> None:
    harness = Harness(mode="collector")
    harness.request_with_queries(6)
    spans = harness.flush()
    assert len(spans["SELECT"]) == 6 and len(spans["GET /authors"]) == 1
    assert all("perf.issue" not in s.attributes for s in spans["SELECT"])
    assert harness.sink.alerts == []
    assert harness.processor.stats.traces_analysed == 0
    harness.provider.shutdown()


def test_disabled_passes_spans_through() -> None:
    harness = Harness(enabled=False)
    harness.request_with_queries(6)
    spans = harness.flush()
    assert len(spans["SELECT"]) == 6
    assert harness.sink.alerts == []
    harness.provider.shutdown()


def test_span_with_a_remote_parent_is_a_local_root(harness: Harness) -> None:
    remote = SpanContext(
        0x1234567890ABCDEF1234567890ABCDEF, 0xFEDCBA9876543210, is_remote=True, trace_flags=TraceFlags(1)
    )
    harness.request_with_queries(
        6, name="GET /downstream", context=trace.set_span_in_context(NonRecordingSpan(remote))
    )
    spans = harness.flush()
    [root] = spans["GET /downstream"]
    assert root.parent is not None and root.parent.is_remote
    [alert] = harness.sink.alerts
    assert alert.finding.operation == "GET /downstream"
    assert alert.finding.trace_id == "1234567890abcdef1234567890abcdef"
    assert alert.finding.root_span_id == root.context.span_id
    assert harness.processor.stats.traces_analysed == 1


def test_code_location_points_at_the_calling_test_function(harness: Harness) -> None:
    with harness.tracer.start_as_current_span(
        "SELECT", kind=SpanKind.CLIENT, attributes={"db.statement": "SELECT 1"}
    ):
        pass
    with harness.tracer.start_as_current_span("internal"):
        pass
    spans = harness.flush()
    [client] = spans["SELECT"]
    assert client.attributes["code.function.name"].endswith(
        "test_code_location_points_at_the_calling_test_function"
    )
    assert client.attributes["code.file.path"] == __file__
    assert isinstance(client.attributes["code.line.number"], int)
    [internal] = spans["internal"]
    assert "code.function.name" not in internal.attributes


def test_annotations_survive_a_second_trace(harness: Harness) -> None:
    harness.request_with_queries(6)
    harness.flush()
    harness.request_with_queries(6)
    spans = harness.flush()
    assert len(spans["SELECT"]) == 12
    assert all(s.attributes.get("perf.issue") == "n_plus_one" for s in spans["SELECT"])
    assert len(harness.sink.alerts) == 1  # the repeat is inside the router's cooldown


class SlowDetector:
    """A detector that takes a while (a big trace): analysis is still running when flush is called."""

    name = "slow"

    def __init__(self) -> None:
        self.started = threading.Event()

    def detect(self, tree: Any) -> Any:
        self.started.set()
        time.sleep(0.3)
        return []


def test_force_flush_waits_for_a_trace_already_being_analysed() -> None:
    slow = SlowDetector()
    harness = Harness(detectors=[slow, NPlusOneDetector(NPlusOneSettings())])
    harness.request_with_queries(6)
    assert slow.started.wait(5)  # the worker took the trace and is analysing it
    spans = harness.flush()  # force_flush: every span that ended before it must be exported now
    assert len(spans.get("SELECT", [])) == 6
    assert len(spans.get("GET /authors", [])) == 1
    harness.provider.shutdown()


def test_trace_whose_root_never_ends_is_exported_after_the_timeout() -> None:
    harness = Harness(trace_timeout_s=0.1)
    root = harness.tracer.start_span("GET /stuck", kind=SpanKind.SERVER)
    parent = trace.set_span_in_context(root)
    for i in range(6):
        harness.tracer.start_span(
            "SELECT",
            kind=SpanKind.CLIENT,
            context=parent,
            attributes={"db.statement": f"SELECT * FROM t WHERE id = {i}"},
        ).end()
    deadline = time.monotonic() + 5
    while len(harness.exporter.get_finished_spans()) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    exported = harness.exporter.get_finished_spans()
    assert len(exported) == 6, "children of a root that never ends must still be exported"
    assert harness.processor.stats.traces_timed_out == 1
    root.end()
    harness.provider.shutdown()


def test_over_the_cpu_share_traces_are_exported_unanalysed_and_counted() -> None:
    """A tiny share and a detector that burns CPU: later traces are skipped, none is lost."""
    import time as _time

    from otel_perf.processors.detectors.n_plus_one import NPlusOneDetector

    class Slow(NPlusOneDetector):
        def detect(self, tree):  # type: ignore[no-untyped-def]
            deadline = _time.thread_time() + 0.02
            while _time.thread_time() < deadline:
                pass
            return super().detect(tree)

    harness = Harness(analysis_cpu_share=0.01, detectors=[Slow()])
    for _ in range(5):
        harness.request_with_queries(6, name="GET /orders")
        harness.processor.force_flush()
    spans = harness.flush()
    assert len(spans["GET /orders"]) == 5 and len(spans["SELECT"]) == 30  # everything exported
    stats = harness.processor.stats
    assert stats.traces_analysed == 1 and stats.traces_skipped == 4
    skipped_children = [span for span in spans["SELECT"] if "perf.issue" not in span.attributes]
    assert len(skipped_children) == 24
    # Spans of skipped traces don't pay for call-site capture either.
    assert all("code.function.name" not in span.attributes for span in skipped_children)


def test_built_with_no_arguments_it_reads_the_environment_and_alerts(tmp_path, monkeypatch) -> None:
    """The DESIGN contract for users who build their own TracerProvider: settings from `OTEL_PERF_*`,
    the registry's detectors, alerts to the sinks the environment configures."""
    alerts = tmp_path / "alerts.jsonl"
    monkeypatch.setenv("OTEL_PERF_ALERTS_FILE", str(alerts))
    monkeypatch.setenv("OTEL_PERF_ALERTS_OTLP", "false")
    monkeypatch.setenv("OTEL_PERF_ANALYSIS_CPU_SHARE", "1")
    monkeypatch.setenv("OTEL_PERF_TRACE_GRACE_MS", "0")
    processor = TraceAnalysisSpanProcessor()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("unit")
    with tracer.start_as_current_span("GET /authors", kind=SpanKind.SERVER):
        for i in range(6):
            attributes = {"db.system": "sqlite", "db.statement": f"SELECT * FROM authors WHERE id = {i}"}
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes=attributes):
                pass
    assert provider.force_flush(10_000)
    provider.shutdown()
    [alert] = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert alert["type"] == "n_plus_one" and alert["operation"] == "GET /authors"


def test_behind_a_mount_each_route_has_its_own_share_and_skips_are_counted_once() -> None:
    """`app.mount("/api", api)`: every request starts as `GET /api`; the sub-app's span names the
    route. A request skipped under `GET /api` is analysed when its own route is due, and counted
    as analysed, not skipped (skips are counted when the request ends)."""
    harness = Harness(analysis_cpu_share=0.0001)

    def request(route: str) -> None:
        with (
            harness.tracer.start_as_current_span(
                "GET /api", kind=SpanKind.SERVER, attributes={"http.route": "/api"}
            ),
            harness.tracer.start_as_current_span(
                f"GET {route}", kind=SpanKind.INTERNAL, attributes={"http.route": route}
            ),
        ):
            for i in range(6):
                with harness.tracer.start_as_current_span(
                    "SELECT",
                    kind=SpanKind.CLIENT,
                    attributes={"db.system": "sqlite", "db.statement": f"SELECT * FROM t WHERE id = {i}"},
                ):
                    pass
        harness.processor.force_flush()

    for route in ("/orders", "/orders", "/authors", "/orders", "/authors"):
        request(route)
    stats = harness.processor.stats
    assert (stats.traces_analysed, stats.traces_skipped) == (2, 3)
    assert stats.skipped == {"max_traces": 0, "cpu_share": 3}
    operations = [alert.finding.operation for alert in harness.sink.alerts]
    assert operations == ["GET /api/orders", "GET /api/authors"]
    assert len(harness.flush()["SELECT"]) == 30  # every span exported, analysed or not
    harness.provider.shutdown()
