"""`TraceAnalysisSpanProcessor`: holds each trace until its local root ends, analyses it off the
request path, and hands the (annotated) spans on to the exporting processor.

Why hold spans instead of analysing beside the exporter: the spans a finding flags (the 20
repeated queries) ended, and would already be queued for export, before the root tells us the
request is over. Holding them lets the exported copies carry `perf.issue` and
`perf.issue.fingerprint`, so Jaeger can search them. The cost on the request thread is an
append under a lock; everything else runs on one worker thread.

Bounded by settings: traces in flight, spans per trace, spans buffered in all. Whatever exceeds a
bound is exported straight away, unanalysed, and counted: analysis may be lost, telemetry never.
No exception from here reaches application code.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.config import Section
from otel_perf.processors import orm, semconv
from otel_perf.processors.analysis import analyze_tree, annotations, build_detectors, worth_analysing
from otel_perf.processors.budget import AnalysisBudget
from otel_perf.processors.code_location import CodeLocator
from otel_perf.processors.sources import node_from_readable, plain_attributes, shape_of_readable
from otel_perf.processors.tree import TraceTree

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from otel_perf.alerting.router import AlertRouter
    from otel_perf.processors.detectors.base import Detector
    from otel_perf.settings import Settings

logger = logging.getLogger("otel_perf.processor")
_CLIENT = SpanKind.CLIENT

Mode = Literal["in_process", "collector", "both"]


class ProcessorSettings(Section):
    """`OTEL_PERF_*`: the kill switch, where analysis runs, and the processor's bounds."""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_")

    enabled: bool = Field(True, description="false: otel-perf does nothing; plain OpenTelemetry remains.")
    mode: Mode = Field(
        "both",
        description="Where traces are analysed: in_process (the app), collector (the analyzer behind the "
        "collector) or both (each finding is still alerted once: the analyzer skips findings the app "
        "already marked).",
    )
    max_traces: int = Field(1000, ge=1, description="Traces buffered at once.")
    max_spans_per_trace: int = Field(5000, ge=1, description="Spans buffered for one trace.")
    max_buffered_spans: int = Field(100_000, ge=1, description="Spans buffered in all.")
    trace_grace_ms: float = Field(
        100, ge=0, description="Wait after a local root ends, for spans that end after it."
    )
    trace_timeout_s: float = Field(
        60, gt=0, description="A trace whose local root has not ended is analysed and exported after this."
    )
    capture_code_location: bool = Field(
        True, description="Record the application frame of DB/HTTP client spans."
    )
    analysis_cpu_share: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Share of one CPU core in-process analysis may use; traces beyond it are exported "
        "unanalysed (counted), every endpoint still analysed at least every 10 s. 1 analyses every trace.",
    )

    @property
    def analyses_in_process(self) -> bool:
        return self.enabled and self.mode in ("in_process", "both")


@dataclass
class ProcessorStats:
    """Counters, also exported as OpenTelemetry metrics (`otel_perf.*`)."""

    traces_analysed: int = 0
    spans_analysed: int = 0
    findings: int = 0
    spans_unanalysed: int = 0  # of analysed traces, exported without analysis: a bound was hit
    traces_skipped: int = 0  # not analysed: over the CPU share or max_traces
    traces_timed_out: int = 0
    analysis_errors: int = 0


@dataclass
class _PendingTrace:
    started_ns: int
    operation: str = ""
    spans: list[ReadableSpan] = field(default_factory=list)
    open_roots: int = 0
    queued: bool = False
    request_path_s: float = 0.0  # CPU its analysis cost the request thread (call-site capture)


class TraceAnalysisSpanProcessor(SpanProcessor):
    """An SDK `SpanProcessor` that finds N+1 queries, slow spans and more in each finished trace.

    With no arguments, settings come from `OTEL_PERF_*` variables and alerts go to the sinks they
    configure. Pass `export_processor` (e.g. `BatchSpanProcessor(exporter)`, not also added to the
    provider) to have flagged spans exported with `perf.issue` attributes; without it, the
    processor only analyses and alerts, and exporting stays with your other processors.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        export_processor: SpanProcessor | None = None,
        router: AlertRouter | None = None,
        detectors: list[Detector] | None = None,
    ) -> None:
        from otel_perf.alerting.router import AlertRouter
        from otel_perf.settings import Settings  # settings compose this module's section

        self.settings = settings or Settings.from_env()
        self._config = self.settings.processor
        self._active = self._config.analyses_in_process
        self._detectors = detectors if detectors is not None else build_detectors(self.settings)
        self.router = router if router is not None else AlertRouter.from_settings(self.settings)
        self._downstream: tuple[SpanProcessor, ...] = (export_processor,) if export_processor else ()
        self._locator = CodeLocator() if self._config.capture_code_location else None
        self._budget = AnalysisBudget(self._config.analysis_cpu_share)
        # Now if the app already imported SQLAlchemy; the launcher's post-instrument hook otherwise.
        orm.watch_lazy_loads()
        self.stats = ProcessorStats()
        self._init_state()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._init_state)
            os.register_at_fork(after_in_child=lambda: (method := weak_reinit()) and method())

    def _init_state(self) -> None:
        """(Re)create locks, buffers and the worker: at start and in a forked child."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._traces: dict[int, _PendingTrace] = {}
        self._ready: deque[tuple[float, int]] = deque()
        self._buffered = 0
        self._releasing = 0  # traces taken by the worker and not yet exported
        self._next_timeout_scan = 0.0
        self._worker: threading.Thread | None = None
        self._stopping = False

    def add_export_processor(self, processor: SpanProcessor) -> None:
        """Spans leave through `processor` after analysis (the configurator wires exporters here)."""
        self._downstream = (*self._downstream, processor)

    # --- the request path: keep it short --------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self._active:
            try:
                trace_id = span.context.trace_id
                parent = span.parent
                if parent is None or parent.is_remote:
                    self._open_root(trace_id, span.name)
                # Only traces that will be analysed pay for the call site (and it counts against
                # the analysis CPU share).
                if span.kind is _CLIENT:
                    pending = self._traces.get(trace_id)
                    if pending is not None:
                        started = time.perf_counter()
                        if self._locator is not None:
                            self._locator.annotate(span)
                        orm.annotate(span)
                        pending.request_path_s += time.perf_counter() - started
            except Exception:  # never into application code
                logger.debug("otel-perf: on_start failed", exc_info=True)
        for downstream in self._downstream:
            downstream.on_start(span, parent_context)

    def _open_root(self, trace_id: int, operation: str) -> None:
        """A local root starts: its trace is analysed if the budget and bounds allow."""
        with self._lock:
            pending = self._traces.get(trace_id)
            if pending is None:
                if len(self._traces) >= self._config.max_traces or not self._budget.allow(operation):
                    self.stats.traces_skipped += 1
                    return
                pending = self._traces[trace_id] = _PendingTrace(time.monotonic_ns(), operation)
            pending.open_roots += 1

    def on_end(self, span: ReadableSpan) -> None:
        # Spans of traces not being analysed (and late stragglers) go straight to export.
        if self._active and span.context.trace_id in self._traces:
            try:
                if self._buffer(span):
                    return
            except Exception:  # never into application code
                logger.debug("otel-perf: on_end failed", exc_info=True)
        self._forward((span,))

    def _buffer(self, span: ReadableSpan) -> bool:
        """Hold `span` with its trace; False when it must be exported unanalysed."""
        trace_id = span.context.trace_id
        parent = span.parent
        is_local_root = parent is None or parent.is_remote
        config = self._config
        with self._lock:
            pending = self._traces.get(trace_id)
            if pending is None or span.name == semconv.ALERT_SPAN_NAME:
                return False
            held = (
                len(pending.spans) < config.max_spans_per_trace and self._buffered < config.max_buffered_spans
            )
            if held:
                pending.spans.append(span)
                self._buffered += 1
            else:
                self.stats.spans_unanalysed += 1
            if is_local_root:
                # Even when the root itself overflowed, it closes the trace: what was held is released.
                pending.open_roots -= 1
                if pending.open_roots <= 0 and not pending.queued:
                    pending.queued = True
                    self._ready.append((time.monotonic() + config.trace_grace_ms / 1000, trace_id))
                    self._ensure_worker()
                    self._wake.notify()
            elif self._worker is None:
                self._ensure_worker()  # so that traces whose root never ends still time out
            return held

    def _forward(self, spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> None:
        for downstream in self._downstream:
            for span in spans:
                try:
                    downstream.on_end(span)
                except Exception:
                    logger.debug("otel-perf: export processor failed", exc_info=True)

    # --- the worker: analysis off the request path -----------------------------------------------

    def _ensure_worker(self) -> None:
        """Start the worker (lazily: a pre-fork master never starts one). Caller holds the lock."""
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name="otel-perf-analysis", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                batch = self._take_due()
                while not batch and not self._stopping:
                    self._wake.wait(timeout=self._next_wait())
                    batch = self._take_due()
                stopping = self._stopping
            self._release_all(batch)
            if stopping and not batch:
                return

    def _release_all(self, batch: list[tuple[int, _PendingTrace]]) -> None:
        """Release traces taken by `_take_due` (which counted them in `_releasing`)."""
        try:
            for trace_id, pending in batch:
                self._release(trace_id, pending)
        finally:
            with self._wake:
                self._releasing -= len(batch)
                self._wake.notify_all()

    def _next_wait(self) -> float:
        if self._ready:
            return max(0.0, self._ready[0][0] - time.monotonic())
        return 1.0 if self._traces else 5.0

    def _take_due(self, everything: bool = False) -> list[tuple[int, _PendingTrace]]:
        """Pop traces whose grace passed (or that timed out). Caller holds the lock."""
        now = time.monotonic()
        due: list[tuple[int, _PendingTrace]] = []
        while self._ready and (everything or self._ready[0][0] <= now):
            _, trace_id = self._ready.popleft()
            pending = self._traces.pop(trace_id, None)
            if pending is not None:
                due.append((trace_id, pending))
        if everything or now >= self._next_timeout_scan:
            # Traces whose local root never ended: a scan of all held traces, so at most once a second.
            self._next_timeout_scan = now + 1.0
            oldest_allowed = time.monotonic_ns() - int(self._config.trace_timeout_s * 1e9)
            expired = [
                trace_id
                for trace_id, pending in self._traces.items()
                if everything or pending.started_ns < oldest_allowed
            ]
            for trace_id in expired:
                due.append((trace_id, self._traces.pop(trace_id)))
            self.stats.traces_timed_out += 0 if everything else len(expired)
        for _, pending in due:
            self._buffered -= len(pending.spans)
        self._releasing += len(due)
        return due

    def _release(self, trace_id: int, pending: _PendingTrace) -> None:
        """Analyse one trace, export its spans (annotated where flagged), route its findings."""
        spans = pending.spans
        findings = []
        started = time.thread_time()
        try:
            if worth_analysing(shape_of_readable(spans), self._detectors):
                tree = TraceTree(trace_id, [node_from_readable(span) for span in spans])
                findings = analyze_tree(tree, self._detectors)
            if findings and self._downstream:  # annotate only what we alone hand to the exporter
                marks = annotations(findings)
                for span in spans:
                    mark = marks.get(span.context.span_id)
                    if mark is not None:
                        _annotate(span, mark)
            self.stats.traces_analysed += 1
            self.stats.spans_analysed += len(spans)
            self.stats.findings += len(findings)
        except Exception:
            self.stats.analysis_errors += 1
            logger.exception("otel-perf: analysis of trace %032x failed; exporting it unannotated", trace_id)
        self._forward(spans)
        # Charged: analysis, export hand-off and call-site capture (conservative: the hand-off is
        # work the SDK would do anyway, on the request thread).
        cost = time.thread_time() - started + pending.request_path_s
        with self._lock:
            self._budget.charge(pending.operation, cost)
        if findings:
            self.router.submit(findings)

    # --- lifecycle --------------------------------------------------------------------------------

    def _drain(self, deadline: float) -> bool:
        """Release everything held, and wait for what the worker is releasing; False on timeout."""
        with self._lock:
            batch = self._take_due(everything=True)
        self._release_all(batch)
        with self._wake:
            while self._releasing > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(timeout=remaining)
        return True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Analyse and export everything held now, complete or not, then flush downstream."""
        deadline = time.monotonic() + timeout_millis / 1000
        flushed = self._drain(deadline)
        flushed = self.router.flush(max(0.0, deadline - time.monotonic())) and flushed
        for downstream in self._downstream:
            remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            flushed = downstream.force_flush(remaining_ms) and flushed
        return flushed

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=5)
        self._drain(time.monotonic() + 5)
        self.router.shutdown()
        for downstream in self._downstream:
            downstream.shutdown()


def _annotate(span: ReadableSpan, mark: tuple[str, str, list[str]]) -> None:
    """Add the finding's attributes to an ended span before it is exported.

    Ended spans are read-only through the API; the attributes are written into the span's own
    mapping instead of copying the span (this runs for every flagged span). Only this processor
    holds the span at this point: it reaches the export processor after analysis.
    """
    issue, fingerprint, issues = mark
    attributes = plain_attributes(span)
    if not isinstance(attributes, dict):  # not an SDK span: leave it as it is
        return
    attributes[semconv.PERF_ISSUE] = issue
    attributes[semconv.PERF_FINGERPRINT] = fingerprint
    if len(issues) > 1:
        attributes["perf.issues"] = tuple(issues)
