"""The analyzer's work: OTLP requests in, whole traces analysed, the same requests back out.

Traces reach the analyzer through the collector's `groupbytrace` (whole, across services) and
leave it towards `tail_sampling` and Jaeger, so every request received is forwarded exactly once,
with the spans findings flagged annotated in place (`perf.issue`, `perf.issue.fingerprint`).
A request is forwarded when every trace it carries has been analysed: a trace is analysed
`trace_wait_ms` after its last span arrived (spans of one trace may come in several requests).
`ingest` returns the request's `Delivery`, resolved once it is back in the collector: the receivers
acknowledge the sender only then, so an analyzer killed mid-traffic loses nothing the collector's
sending queue would not send again. That holds for requests of whole traces (each with its root
span), which is what the collector's `groupbytrace` sends; a request with part of a trace is
acknowledged on receipt, since its sender (an SDK's batch exporter) may hold the rest until answered.

Mode `both`: a finding whose spans the app already marked with the same fingerprint was alerted
in-process; it is not alerted again. Over `max_buffered_spans`, requests pass through
unanalysed (counted): the analyzer may skip analysis, it never loses or delays telemetry for long.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from otel_perf.alerting.router import AlertRouter
from otel_perf.analyzer.forwarder import Delivery
from otel_perf.analyzer.settings import AnalyzerSettings
from otel_perf.errors import OtlpFormatError, Unavailable
from otel_perf.processors import semconv
from otel_perf.processors.analysis import analyse_trace
from otel_perf.processors.detectors.base import Detector
from otel_perf.processors.engine import OVER_MAX_BUFFERED_SPANS, EngineStats, Held, HoldBuffer
from otel_perf.processors.findings import Finding, Severity
from otel_perf.processors.monitors import Watcher
from otel_perf.processors.monitors.resources import samples_from_metrics
from otel_perf.processors.monitors.spanmetrics import SpanMetricsReader
from otel_perf.processors.sources import PROTO, ProtoSpan, proto_operations, spans_from_proto
from otel_perf.processors.tree import ENTRY_KINDS, FirstRequests, TraceTree, starts_request, within_skew

logger = logging.getLogger("otel_perf.analyzer")

# Why a request passed through unanalysed (`PipelineStats.unanalysed`), beside the engine's bounds.
NOT_ANALYSING = "not_analysing"
_STATUS_ERROR = 2  # OTLP Status.STATUS_CODE_ERROR


class Forward(Protocol):
    """The way back to the collector, bounded: room is reserved when a request is accepted, so
    the requests held for analysis count too."""

    def reserve(self, size: int) -> bool: ...

    def release(self, size: int) -> None: ...

    def put(self, request: Any, size: int, delivery: Delivery | None = None) -> bool: ...


@dataclass
class PipelineStats(EngineStats):
    """The engine's counters and the analyzer's own (Prometheus, `otel_perf_analyzer_*`)."""

    unanalysed: dict[str, int] = field(default_factory=lambda: {OVER_MAX_BUFFERED_SPANS: 0, NOT_ANALYSING: 0})
    requests: int = 0
    spans_received: int = 0
    findings_already_alerted: int = 0
    rejected_bad_request: int = 0
    rejected_unavailable: int = 0
    forward_dropped: int = 0
    acknowledged_before_forwarding: int = 0


@dataclass
class _Request:
    message: Any
    size: int  # encoded bytes, reserved on the way back
    delivery: Delivery
    remaining: int = 0


@dataclass
class _TraceState:
    """What the analyzer keeps per held trace, beside its spans: the requests that carried them."""

    requests: list[_Request] = field(default_factory=list)


def _has_root(spans: list[ProtoSpan]) -> bool:
    return any(not span.parent_span_id for span, *_ in spans)


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
        watcher: Watcher | None = None,
    ) -> None:
        """`analyses`: run the detectors (else only forward); `skip_marked`: skip findings the app
        already marked on its spans (both hosts analyse: `OTEL_PERF_MODE=both`); `watcher`: where
        every request (entry span) goes for trends and error rates, analysed or not."""
        self.watcher = watcher
        self._span_metrics = SpanMetricsReader()
        self._requests_from_spans = True  # until spanmetrics arrive
        self._config = config
        self._analyses = analyses
        self._skip_marked = skip_marked
        self._detectors = list(detectors)
        self._forward = forward
        self.router = router
        self.stats = PipelineStats()
        # Span times bounded by the receive time, as the router's are (a sender's wrong clock).
        self._first_requests = FirstRequests(within_skew(time.time_ns, router.settings.max_clock_skew_s))
        # Held until no span of the trace arrived for trace_wait_ms; the bound is checked per request.
        self._engine: HoldBuffer[ProtoSpan, _TraceState] = HoldBuffer(
            self._analyse,
            self.stats,
            delay_s=config.trace_wait_ms / 1000,
            max_hold_s=config.max_trace_hold_s,
            max_buffered_spans=config.max_buffered_spans,
            thread_name="otel-perf-analyzer",
        )

    @property
    def buffered_spans(self) -> int:
        return self._engine.buffered

    @property
    def buffered_traces(self) -> int:
        return len(self._engine.traces)

    @property
    def worker_alive(self) -> bool:
        """False once drained, or when the analysis worker died."""
        return self._engine.worker_alive

    # --- ingestion (receiver threads) -------------------------------------------------------------

    def ingest(self, message: Any) -> Delivery | None:
        """Accept one `ExportTraceServiceRequest`. Raises `OtlpFormatError` (malformed, not
        retryable) or `Unavailable` (retry later); otherwise the request will be forwarded, and the
        returned delivery resolved then (None: a part of a trace, to acknowledge now)."""
        size = message.ByteSize()
        if not self._forward.reserve(size):
            self.stats.rejected_unavailable += 1
            raise Unavailable("the export queue back to the collector is full")
        try:
            traces = spans_from_proto(message)
        except OtlpFormatError:
            self._forward.release(size)
            self.stats.rejected_bad_request += 1
            raise
        count = sum(len(spans) for spans in traces.values())
        self._note_requests(traces)
        if self.watcher is not None and self._requests_from_spans:
            self._watch(traces)
        self.stats.requests += 1
        self.stats.spans_received += count
        delivery: Delivery = Delivery()
        if not count:
            self._put(message, size, delivery)
            return delivery
        engine = self._engine
        if not self._analyses or not engine.fits(count):
            self.stats.count_unanalysed(OVER_MAX_BUFFERED_SPANS if self._analyses else NOT_ANALYSING, count)
            self._put(message, size, delivery)
            return delivery
        request = _Request(message, size, delivery, remaining=len(traces))
        with engine.lock:
            for trace_id, spans in traces.items():
                held = engine.traces.get(trace_id)
                if held is None:
                    held = engine.open(trace_id, _TraceState())
                held.state.requests.append(request)
                engine.extend(held, spans)
                engine.schedule(trace_id, held)
        return delivery if all(map(_has_root, traces.values())) else None

    def _note_requests(self, traces: dict[int, list[ProtoSpan]]) -> None:
        """Each service's first request, which ends its start-up (see `FirstRequests`)."""
        saw = self._first_requests.saw
        for spans in traces.values():
            for span, service, _, _ in spans:
                if span.kind in ENTRY_KINDS:
                    saw(service, span.start_time_unix_nano)

    def _watch(self, traces: dict[int, list[ProtoSpan]]) -> None:
        record = self.watcher.record if self.watcher is not None else None
        if record is None:
            return
        for spans in traces.values():
            operation = proto_operations(spans)
            for span, service, version, _ in spans:
                if (
                    starts_request(bool(span.parent_span_id), span.kind)
                    and span.name != semconv.ALERT_SPAN_NAME
                ):
                    start, end = span.start_time_unix_nano, span.end_time_unix_nano
                    failed = span.status.code == _STATUS_ERROR
                    record(service, operation(span, service), version, end, end - start, failed)

    def watch_metrics(self, request: Any) -> None:
        """Metrics to the monitors: resource utilisation (CPU, memory, disk) from apps' system
        metrics, and requests from the collector's spanmetrics. Once spanmetrics arrive, they are
        the monitors' only source of requests (they count traffic sampled away, and reach one
        analyzer per service, see `monitors.spanmetrics`): the spans received are no longer counted."""
        watcher = self.watcher
        if watcher is None:
            return
        for service, name, percent, time_ns in samples_from_metrics(request):
            watcher.sample(service, name, percent, time_ns)
        for requests in self._span_metrics.requests(request):
            if self._requests_from_spans:
                self._requests_from_spans = False
                logger.info("otel-perf analyzer: spanmetrics arrive; trends and error rates now read them")
            watcher.record_many(
                requests.service,
                requests.operation,
                requests.version,
                requests.time_ns,
                requests.failed,
                requests.durations,
            )

    def _put(self, message: Any, size: int, delivery: Delivery) -> None:
        if not self._forward.put(message, size, delivery):
            self.stats.forward_dropped += 1

    # --- analysis (released by the engine's worker) -----------------------------------------------

    def _analyse(self, trace_id: int, held: Held[ProtoSpan, _TraceState], deadline: float | None) -> None:
        try:
            self._analyse_spans(trace_id, held.spans)
        finally:  # whatever analysis did, the requests go on
            for request in held.state.requests:
                request.remaining -= 1
                if request.remaining == 0:
                    self._put(request.message, request.size, request.delivery)

    def _analyse_spans(self, trace_id: int, spans: list[ProtoSpan]) -> None:
        try:
            self._learn_app_alerts(spans)
        except Exception:
            logger.exception("otel-perf analyzer: reading the app's alerts in trace %032x failed", trace_id)
        findings = analyse_trace(
            trace_id,
            spans,
            PROTO,
            self._detectors,
            self.stats,
            source="collector",
            keep=self._not_alerted if self._skip_marked else None,
            first_requests=self._first_requests,
        )
        if findings:
            self.router.submit(findings)

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

    def _not_alerted(self, tree: TraceTree, finding: Finding) -> bool:
        """Mode both: False where the app marked these spans with this finding's fingerprint, so it
        alerted."""
        marked = all(
            tree.nodes[span_id].perf_fingerprint == finding.fingerprint for span_id in finding.offending
        )
        self.stats.findings_already_alerted += marked
        return not marked

    # --- lifecycle --------------------------------------------------------------------------------

    def drain(self, timeout_s: float = 10.0) -> None:
        """Analyse everything held now and stop the worker."""
        deadline = time.monotonic() + timeout_s
        self._engine.stop(timeout_s)
        self._engine.drain(deadline)
        if self.watcher is not None:
            self.watcher.shutdown()
