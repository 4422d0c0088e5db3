"""The analyzer's work: OTLP requests in, whole traces analysed, the same requests back out.

Traces reach the analyzer through the collector's `groupbytrace` (whole, across services) and
leave it towards `tail_sampling` and Jaeger, so every request received is forwarded exactly once,
with the spans findings flagged annotated in place (`perf.issue`, `perf.issue.fingerprint`).
A request is forwarded when every trace it carries has been analysed: a trace is analysed
`trace_wait_ms` after its last span arrived (spans of one trace may come in several requests).

Mode `both`: a finding whose spans the app already marked with the same fingerprint was alerted
in-process; it is not alerted again. Over `max_buffered_spans`, requests pass through
unanalysed (counted): the analyzer may skip analysis, it never loses or delays telemetry for long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from otel_perf.alerting.router import AlertRouter
from otel_perf.analyzer.settings import AnalyzerSettings
from otel_perf.errors import OtlpFormatError, Unavailable
from otel_perf.processors import semconv
from otel_perf.processors.analysis import analyze_tree, span_marks, worth_analysing
from otel_perf.processors.detectors.base import Detector
from otel_perf.processors.findings import Finding, Severity
from otel_perf.processors.sources import (
    ProtoSpan,
    node_from_proto,
    shape_of_proto,
    spans_from_proto,
)
from otel_perf.processors.tree import TraceTree

logger = logging.getLogger("otel_perf.analyzer")


class Forward(Protocol):
    def put(self, request: Any) -> bool: ...

    def full(self) -> bool: ...


@dataclass
class PipelineStats:
    requests: int = 0
    spans_received: int = 0
    traces_analysed: int = 0
    spans_analysed: int = 0
    spans_unanalysed: int = 0
    findings: int = 0
    findings_already_alerted: int = 0
    analysis_errors: int = 0
    rejected_bad_request: int = 0
    rejected_unavailable: int = 0
    forward_dropped: int = 0


@dataclass
class _Request:
    message: Any
    remaining: int = 0


@dataclass
class _Trace:
    spans: list[ProtoSpan] = field(default_factory=list)
    requests: list[_Request] = field(default_factory=list)
    due: float = 0.0


class AnalysisPipeline:
    def __init__(
        self,
        config: AnalyzerSettings,
        detectors: Sequence[Detector],
        forward: Forward,
        router: AlertRouter,
        *,
        analyses: bool = True,
        skip_marked: bool = True,
    ) -> None:
        """`analyses`: run the detectors (else only forward); `skip_marked`: skip findings the app
        already marked on its spans (both hosts analyse: `OTEL_PERF_MODE=both`)."""
        self._config = config
        self._analyses = analyses
        self._skip_marked = skip_marked
        self._detectors = list(detectors)
        self._forward = forward
        self.router = router
        self.stats = PipelineStats()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._traces: OrderedDict[int, _Trace] = OrderedDict()  # least recently touched first
        self._buffered = 0
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="otel-perf-analyzer", daemon=True)
        self._worker.start()

    @property
    def buffered_spans(self) -> int:
        return self._buffered

    @property
    def buffered_traces(self) -> int:
        return len(self._traces)

    # --- ingestion (receiver threads) -------------------------------------------------------------

    def ingest(self, message: Any) -> None:
        """Accept one `ExportTraceServiceRequest`. Raises `OtlpFormatError` (malformed, not
        retryable) or `Unavailable` (retry later); otherwise the request will be forwarded."""
        if self._forward.full():
            self.stats.rejected_unavailable += 1
            raise Unavailable("the export queue back to the collector is full")
        try:
            traces = spans_from_proto(message)
        except OtlpFormatError:
            self.stats.rejected_bad_request += 1
            raise
        count = sum(len(spans) for spans in traces.values())
        self.stats.requests += 1
        self.stats.spans_received += count
        if not count:
            self._put(message)
            return
        if not self._analyses or self._buffered + count > self._config.max_buffered_spans:
            self.stats.spans_unanalysed += count
            self._put(message)
            return
        request = _Request(message, remaining=len(traces))
        due = time.monotonic() + self._config.trace_wait_ms / 1000
        with self._lock:
            for trace_id, spans in traces.items():
                trace = self._traces.get(trace_id)
                if trace is None:
                    trace = self._traces[trace_id] = _Trace()
                trace.requests.append(request)
                trace.spans.extend(spans)
                trace.due = due
                self._traces.move_to_end(trace_id)
            self._buffered += count
            self._wake.notify()

    def _put(self, message: Any) -> None:
        if not self._forward.put(message):
            self.stats.forward_dropped += 1

    # --- analysis (one worker) --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                due = self._take_due(everything=self._stopping)
                while not due and not self._stopping:
                    self._wake.wait(timeout=self._wait_time())
                    due = self._take_due(everything=self._stopping)
                stopping = self._stopping
            for trace_id, trace in due:
                self._analyse(trace_id, trace)
            if stopping and not due:
                return

    def _wait_time(self) -> float:
        if not self._traces:
            return 1.0
        first = next(iter(self._traces.values()))
        return max(0.001, first.due - time.monotonic())

    def _take_due(self, everything: bool = False) -> list[tuple[int, _Trace]]:
        """Traces whose wait passed, oldest first. Caller holds the lock."""
        now = time.monotonic()
        due: list[tuple[int, _Trace]] = []
        while self._traces:
            trace_id, trace = next(iter(self._traces.items()))
            if not everything and trace.due > now:
                break
            self._traces.popitem(last=False)
            self._buffered -= len(trace.spans)
            due.append((trace_id, trace))
        return due

    def _analyse(self, trace_id: int, trace: _Trace) -> None:
        findings: list[Finding] = []
        try:
            self._learn_app_alerts(trace.spans)
            if worth_analysing(shape_of_proto(trace.spans), self._detectors):
                tree = TraceTree(trace_id, [node_from_proto(*span) for span in trace.spans])
                findings = analyze_tree(tree, self._detectors, source="collector")
                if findings:
                    _annotate(tree, findings)
                    findings = [finding for finding in findings if not self._already_alerted(tree, finding)]
            self.stats.traces_analysed += 1
            self.stats.spans_analysed += len(trace.spans)
            self.stats.findings += len(findings)
        except Exception:
            self.stats.analysis_errors += 1
            logger.exception(
                "otel-perf analyzer: analysis of trace %032x failed; forwarding it as is", trace_id
            )
        if findings:
            self.router.submit(findings)
        for request in trace.requests:
            request.remaining -= 1
            if request.remaining == 0:
                self._put(request.message)

    def _learn_app_alerts(self, spans: list[ProtoSpan]) -> None:
        """Mode both: an app's alert span passing through means that finding was alerted; the
        router's cooldown then also covers this analyzer (e.g. for traces the app did not analyse)."""
        if not self._skip_marked:
            return
        for span, *_ in spans:
            if span.name != semconv.ALERT_SPAN_NAME:
                continue
            for event in span.events:
                values = {kv.key: kv.value.string_value for kv in event.attributes}
                fingerprint = values.get(semconv.PERF_FINGERPRINT)
                if fingerprint:
                    severity = Severity.parse(values.get(semconv.PERF_SEVERITY) or "low")
                    self.router.remember(
                        fingerprint, event.time_unix_nano or span.end_time_unix_nano, severity
                    )

    def _already_alerted(self, tree: TraceTree, finding: Finding) -> bool:
        """Mode both: the app marked these spans with this finding's fingerprint, so it alerted."""
        if not self._skip_marked:
            return False
        marked = all(
            tree.nodes[span_id].perf_fingerprint == finding.fingerprint for span_id in finding.offending
        )
        self.stats.findings_already_alerted += marked
        return marked

    # --- lifecycle --------------------------------------------------------------------------------

    def drain(self, timeout_s: float = 10.0) -> None:
        """Analyse everything held now and stop the worker."""
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        self._worker.join(timeout=timeout_s)


def _annotate(tree: TraceTree, findings: list[Finding]) -> None:
    """Add `perf.issue` attributes to the flagged spans, in the protobuf messages themselves."""
    for span_id, (issue, fingerprint, issues) in span_marks(findings).items():
        node = tree.nodes.get(span_id)
        if node is None or node.source is None:
            continue
        attributes = node.source.attributes
        present = {kv.key for kv in attributes}
        if semconv.PERF_ISSUE not in present:
            attributes.append(KeyValue(key=semconv.PERF_ISSUE, value=AnyValue(string_value=issue)))
            attributes.append(
                KeyValue(key=semconv.PERF_FINGERPRINT, value=AnyValue(string_value=fingerprint))
            )
        if len(issues) > 1 and semconv.PERF_ISSUES not in present:
            listed = ArrayValue(values=[AnyValue(string_value=issue) for issue in issues])
            attributes.append(KeyValue(key=semconv.PERF_ISSUES, value=AnyValue(array_value=listed)))
