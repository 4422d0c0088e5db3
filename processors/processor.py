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
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode, get_current_span
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors import orm, semconv
from otel_perf.processors.analysis import analyse_trace, build_detectors
from otel_perf.processors.budget import AnalysisBudget
from otel_perf.processors.code_location import CodeLocator
from otel_perf.processors.config import Section
from otel_perf.processors.detectors.unused_eager_load import TYPE as UNUSED_EAGER_LOAD
from otel_perf.processors.engine import (
    ENGINE_COUNTERS,
    OVER_MAX_BUFFERED_SPANS,
    OVER_MAX_SPANS_PER_TRACE,
    OVER_MAX_TRACES,
    Counter,
    EngineStats,
    Held,
    HoldBuffer,
)
from otel_perf.processors.failsafe import record_failure
from otel_perf.processors.findings import FindingsHandler, default_handler
from otel_perf.processors.monitors import Watcher, build_watcher
from otel_perf.processors.sources import READABLE
from otel_perf.processors.tree import FirstRequests, join_mount, mount_piece

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.context import Context
    from opentelemetry.trace import SpanContext

    from otel_perf.processors.detectors.base import Detector

logger = logging.getLogger("otel_perf.processor")
_CLIENT = SpanKind.CLIENT
_INTERNAL = SpanKind.INTERNAL
_REQUEST_KINDS = (SpanKind.SERVER, SpanKind.CONSUMER)
_BARE_CALL_KINDS = (SpanKind.CLIENT, SpanKind.PRODUCER)  # as a local root: no request (`tree.starts_request`)
_MAX_SKIPPED_REMEMBERED = 4096
_MAX_MOUNTS_REMEMBERED = 4096

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
    export_wait_s: float = Field(
        5,
        ge=0,
        description="Held spans are handed to the exporter's queue (BatchSpanProcessor) no faster than it "
        "drains; the longest the worker waits for room, per trace. After it, and until the queue drains, "
        "spans go on unpaced and the exporter drops what its queue can't take, as without otel-perf. "
        "0: never wait.",
    )

    @property
    def analyses_in_process(self) -> bool:
        return self.enabled and self.mode in ("in_process", "both")

    @property
    def analyses_in_collector(self) -> bool:
        return self.enabled and self.mode in ("collector", "both")


SKIPPED_CPU_SHARE = "cpu_share"


@dataclass
class ProcessorStats(EngineStats):
    """The engine's counters and the processor's own, also exported as OpenTelemetry metrics
    (`otel_perf.*`, `PROCESSOR_COUNTERS`). `spans_unanalysed`: spans of analysed traces exported
    without analysis (a bound was hit)."""

    unanalysed: dict[str, int] = field(
        default_factory=lambda: {OVER_MAX_SPANS_PER_TRACE: 0, OVER_MAX_BUFFERED_SPANS: 0}
    )
    traces_skipped: int = 0  # not analysed: over the CPU share or max_traces (by reason in `skipped`)
    skipped: dict[str, int] = field(default_factory=lambda: {OVER_MAX_TRACES: 0, SKIPPED_CPU_SHARE: 0})
    export_waits_timed_out: int = 0  # the exporter's queue stayed full for export_wait_s

    def count_skipped(self, reason: str) -> None:
        self.traces_skipped += 1
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


PROCESSOR_COUNTERS = (
    *ENGINE_COUNTERS,
    Counter(
        "traces_skipped", "{trace}", "Traces not analysed in-process (CPU share or max_traces).", "skipped"
    ),
    Counter(
        "export_waits_timed_out",
        "{wait}",
        "Hand-overs to an exporter whose queue stayed full past OTEL_PERF_EXPORT_WAIT_S.",
    ),
)


class _TraceState:
    """What the processor keeps per held trace, beside its spans (`engine.Held`)."""

    __slots__ = ("mounted", "open_roots", "operation", "request_path_s")

    def __init__(self, operation: str, mounted: str | None = None) -> None:
        self.operation = operation  # its root's name when it started: what the budget was asked for
        self.mounted = mounted  # behind a mount, the whole route (see `_enter_mount`)
        self.open_roots = 0
        self.request_path_s = 0.0  # CPU its analysis cost the request thread (call-site capture)


class TraceAnalysisSpanProcessor(SpanProcessor):
    """An SDK `SpanProcessor` that finds N+1 queries, slow spans and more in each finished trace.

    With no arguments, settings come from `OTEL_PERF_*` variables and alerts go to the sinks they
    configure. Pass `export_processor` (e.g. `BatchSpanProcessor(exporter)`, not also added to the
    provider) to have flagged spans exported with `perf.issue` attributes; without it, the
    processor only analyses and alerts, and exporting stays with your other processors.
    """

    def __init__(
        self,
        config: ProcessorSettings | None = None,
        *,
        detectors: Sequence[Detector] | None = None,
        findings: FindingsHandler | None = None,
        export_processor: SpanProcessor | None = None,
        watcher: Watcher | Literal["env"] | None = "env",
    ) -> None:
        """Each argument defaults to what `OTEL_PERF_*` configures: this processor's section, the
        registry's enabled detectors, the default findings handler (otel-perf's alert router) and
        the watcher of trends and error rates (None: no watching)."""
        self._config = config = config if config is not None else ProcessorSettings.load()
        self._active = config.analyses_in_process
        self._detectors = list(detectors) if detectors is not None else build_detectors()
        self.findings = findings if findings is not None else default_handler()
        if watcher == "env":
            watcher = build_watcher(findings=self.findings, sample_host=True) if self._active else None
        self.watcher = watcher if self._active else None
        self._identity: tuple[object, str, str | None] = (None, "", None)  # resource → service, version
        self._first_requests = FirstRequests()  # start-up work is what ran before the first request
        self._downstream: tuple[SpanProcessor, ...] = (export_processor,) if export_processor else ()
        self._locator = CodeLocator() if config.capture_code_location else None
        self._budget = AnalysisBudget(config.analysis_cpu_share)
        if self._active:
            # Now if the app already imported SQLAlchemy; the launcher's post-instrument hook otherwise.
            self.watch_orm()
        self.stats = ProcessorStats()
        # Held until the local root ended + the grace, or trace_timeout_s after the first root started.
        self._engine: HoldBuffer[ReadableSpan, _TraceState] = HoldBuffer(
            self._release,
            self.stats,
            delay_s=config.trace_grace_ms / 1000,
            max_hold_s=config.trace_timeout_s,
            max_traces=config.max_traces,
            max_spans_per_trace=config.max_spans_per_trace,
            max_buffered_spans=config.max_buffered_spans,
            thread_name="otel-perf-analysis",
            after_fork=self._init_state,
        )
        self._init_state()

    def _init_state(self) -> None:
        """(Re)create the processor's own state: at start and in a forked child (the engine
        re-creates its lock, buffer and worker itself, first)."""
        # The engine's held traces by id, read on the request path without the lock: one lookup.
        self._traces = self._engine.traces
        # Traces not analysed (CPU share, max_traces): a later local root of the same trace (the app
        # calling itself) must not start a fragment of it, which would be analysed without its entry.
        # The value: a CPU-share skip not counted yet (see `_enter_mount`), or None once counted.
        self._skipped: OrderedDict[int, str | None] = OrderedDict()
        # Requests served by a mounted sub-application, by span id (the root's and each mount's): the
        # root's id and name, and the whole operation (see `_enter_mount`).
        self._mounts: OrderedDict[int, tuple[int, str, str]] = OrderedDict()
        # The downstream processors, each with its export queue where one can be read (see _export_targets).
        self._targets: tuple[tuple[SpanProcessor, ...], tuple[tuple[SpanProcessor, _ExportQueue | None], ...]]
        self._targets = ((), ())

    def watch_orm(self) -> bool:
        """Listen to SQLAlchemy for what only the ORM knows (lazy loads; eager loads nobody read,
        when that detector runs). True when listening."""
        eager = next((detector for detector in self._detectors if detector.name == UNUSED_EAGER_LOAD), None)
        min_requests = getattr(getattr(eager, "settings", None), "min_requests", 1)
        return orm.watch_lazy_loads(eager_loads=eager is not None, min_unread_requests=min_requests)

    @property
    def active(self) -> bool:
        """Whether this processor analyses traces (enabled, and in-process analysis is on)."""
        return self._active

    # The spans held in all (benchmarks/scaling.py reads it, with `_traces`).
    _buffered = property(lambda self: self._engine.buffered)

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
                    if span.kind in _REQUEST_KINDS:
                        self._first_requests.saw(self._identify(span.resource)[0], span.start_time or 0)
                elif span.kind is _INTERNAL and semconv.first(span.attributes or {}, semconv.HTTP_ROUTE):
                    self._enter_mount(span, parent, parent_context)
                # Only traces that will be analysed pay for the call site (and it counts against
                # the analysis CPU share).
                if span.kind is _CLIENT:
                    held = self._traces.get(trace_id)
                    if held is not None:
                        started = time.perf_counter()
                        orm.annotate(span)
                        if self._locator is not None:
                            try:
                                self._locator.annotate(span)
                            except Exception:
                                record_failure("call-site capture")
                        held.state.request_path_s += time.perf_counter() - started
            except Exception:  # never into application code
                record_failure("span start")
        for downstream in self._downstream:
            downstream.on_start(span, parent_context)

    def _open_root(self, trace_id: int, operation: str) -> None:
        """A local root starts: its trace is analysed if the budget and bounds allow."""
        engine = self._engine
        with engine.lock:
            held = engine.traces.get(trace_id)
            if held is None:
                skipped = self._skipped
                if trace_id in skipped:
                    return
                if engine.full():
                    reason = OVER_MAX_TRACES
                elif not self._budget.allow(operation):
                    reason = SKIPPED_CPU_SHARE
                else:
                    reason = None
                if reason is not None:
                    if reason == SKIPPED_CPU_SHARE:
                        skipped[trace_id] = reason  # counted when its root ends: a mount may admit it
                    else:
                        self.stats.count_skipped(reason)
                        skipped[trace_id] = None
                    if len(skipped) > _MAX_SKIPPED_REMEMBERED:
                        skipped.popitem(last=False)
                    return
                held = engine.open(trace_id, _TraceState(operation))
            held.state.open_roots += 1

    def _enter_mount(self, span: Span, parent: SpanContext, parent_context: Context | None) -> None:
        """A mounted sub-application (`app.mount("/api", api)`) starts serving a request: its span
        has the sub-app's route, the request's the mount's (`GET /api`). From here the request is
        the whole route (`GET /api/articles/{slug}`, the rule `tree.operation` files findings by)
        for the trend series and the analysis budget, which would otherwise share one `GET /api`
        among every endpoint behind the mount: a request skipped under that name is analysed if
        its own route is due."""
        route = str(semconv.first(span.attributes or {}, semconv.HTTP_ROUTE))
        mounts = self._mounts
        engine = self._engine
        with engine.lock:
            outer = mounts.get(parent.span_id)
            if outer is not None:  # a mount in a mount
                root_id, root_name, base = outer
            else:
                request = get_current_span(parent_context)
                if not isinstance(request, ReadableSpan) or request.kind is not SpanKind.SERVER:
                    return
                request_parent = request.parent
                if request_parent is not None and not request_parent.is_remote:
                    return
                root_id, root_name = parent.span_id, request.name
                base = root_name
            operation = join_mount(base, mount_piece(route))
            mounts[span.context.span_id] = mounts[root_id] = (root_id, root_name, operation)
            while len(mounts) > _MAX_MOUNTS_REMEMBERED:
                mounts.popitem(last=False)
            trace_id = span.context.trace_id
            held = engine.traces.get(trace_id)
            if held is not None:
                held.state.mounted = operation
            elif (
                self._skipped.get(trace_id) == SKIPPED_CPU_SHARE
                and not engine.full()
                and self._budget.allow(operation)
            ):
                del self._skipped[trace_id]
                engine.open(trace_id, _TraceState(root_name, operation)).state.open_roots = 1

    def on_end(self, span: ReadableSpan) -> None:
        parent = span.parent
        if parent is None or parent.is_remote:  # a local root
            operation = span.name
            try:
                operation = self._end_root(span, operation)
            except Exception:  # never into application code
                record_failure("span end")
            # A request (analysed or not), unless a bare query or call (start-up DDL).
            if self.watcher is not None and span.kind not in _BARE_CALL_KINDS:
                try:
                    self._watch(span, operation)
                except Exception:  # never into application code
                    record_failure("request watch")
        elif span.kind is _INTERNAL and self._mounts:
            self._mounts.pop(span.context.span_id, None)
        # Spans of traces not being analysed (and late stragglers) go straight to export.
        if self._active and span.context.trace_id in self._traces:
            try:
                if self._buffer(span):
                    return
            except Exception:  # never into application code
                record_failure("span end")
        self._forward((span,))

    def _identify(self, resource: Resource) -> tuple[str, str | None]:
        """(service, version) of the app's resource, read once per resource object."""
        cached, service, version = self._identity
        if resource is not cached:
            attributes = resource.attributes
            service = str(attributes.get(semconv.SERVICE_NAME) or "unknown_service")
            named = attributes.get(semconv.SERVICE_VERSION)
            version = str(named) if named else None
            self._identity = (resource, service, version)
        return service, version

    def _end_root(self, span: ReadableSpan, operation: str) -> str:
        """A local root ends: its operation (see `_enter_mount`), and its trace's skip counted once
        no mount can admit it any more."""
        if not self._active:
            return operation
        trace_id = span.context.trace_id
        if self._skipped.get(trace_id) is not None:
            with self._engine.lock:
                if self._skipped.get(trace_id) == SKIPPED_CPU_SHARE:
                    self._skipped[trace_id] = None
                    self.stats.count_skipped(SKIPPED_CPU_SHARE)
        if self._mounts:
            mounted = self._mounts.pop(span.context.span_id, None)
            if mounted is not None:
                return mounted[2]
        return operation

    def _watch(self, span: ReadableSpan, operation: str) -> None:
        """One request into the trend and error-rate windows: an append (see `monitors.watcher`)."""
        service, version = self._identify(span.resource)
        watcher = self.watcher
        if watcher is not None and watcher.service is None:
            watcher.service = service  # the app's resources are sampled under its name
        start, end = span.start_time or 0, span.end_time or 0
        if watcher is not None and span.name != semconv.ALERT_SPAN_NAME:
            watcher.record(
                service, operation, version, end, end - start, span.status.status_code is StatusCode.ERROR
            )

    def _buffer(self, span: ReadableSpan) -> bool:
        """Hold `span` with its trace; False when it must be exported unanalysed."""
        trace_id = span.context.trace_id
        parent = span.parent
        is_local_root = parent is None or parent.is_remote
        engine = self._engine
        with engine.lock:
            held = engine.traces.get(trace_id)
            if held is None or span.name == semconv.ALERT_SPAN_NAME:
                return False
            over = engine.add(held, span)
            if over is not None:
                self.stats.count_unanalysed(over)
            if is_local_root:
                # Even when the root itself overflowed, it closes the trace: what was held is released.
                state = held.state
                state.open_roots -= 1
                if state.open_roots <= 0 and held.due is None:
                    engine.schedule(trace_id, held)
            elif not engine.worker_started:
                engine.ensure_worker()  # so that traces whose root never ends still time out
            return over is None

    def _forward(self, spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> None:
        """Straight on, as plain OpenTelemetry would (the request path: never waits)."""
        for downstream in self._downstream:
            for span in spans:
                try:
                    downstream.on_end(span)
                except Exception:
                    logger.debug("otel-perf: export processor failed", exc_info=True)

    # --- the hand-over: off the request path, no faster than the exporter takes spans ------------

    def _export_targets(self) -> tuple[tuple[SpanProcessor, _ExportQueue | None], ...]:
        downstream = self._downstream
        targets = self._targets
        if targets[0] is not downstream:  # built once per set of export processors
            queues = tuple((each, _ExportQueue.of(each)) for each in downstream)
            targets = self._targets = (downstream, queues)
        return targets[1]

    def _hand_over(self, spans: list[ReadableSpan], deadline: float | None = None) -> None:
        """Hand a released trace's spans to each export processor, waiting for room in its queue.

        A trace's spans arrive all at once, where plain OpenTelemetry would have queued them one by
        one while the exporter drained; handed over at once, they overflow the BatchSpanProcessor's
        queue (which drops). So: as many as the queue has room for, then wait for its worker to drain
        some, for at most `export_wait_s` (or until `deadline`, if sooner). Processors without a
        queue we can read get every span at once, as before.
        """
        wait_s = self._config.export_wait_s
        now = time.monotonic()
        deadline = now + wait_s if deadline is None else min(deadline, now + wait_s)
        for downstream, queue in self._export_targets():
            if queue is None or wait_s <= 0:
                _emit(downstream, spans, 0, len(spans))
            else:
                self._pace(downstream, queue, spans, deadline)

    def _pace(
        self, downstream: SpanProcessor, queue: _ExportQueue, spans: list[ReadableSpan], deadline: float
    ) -> None:
        sent, total, pause = 0, len(spans), _FIRST_PAUSE_S
        while sent < total:
            room = queue.room()
            if room is None:  # not ours to pace (shut down, forked, stalled): as plain OpenTelemetry
                break
            if room > 0:
                end = min(total, sent + room)
                _emit(downstream, spans, sent, end)
                sent, pause = end, _FIRST_PAUSE_S
                continue
            queue.wake()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # The exporter isn't draining (collector down, exporter retrying): stop waiting on it
                # until its queue drains, so analysis goes on; it drops what it can't take.
                queue.stalled = True
                self.stats.export_waits_timed_out += 1
                log = logger.warning if self.stats.export_waits_timed_out == 1 else logger.debug
                log(
                    "otel-perf: the exporter's queue stayed full; handing spans on without waiting until "
                    "it drains (it drops what it cannot take, as it would without otel-perf)"
                )
                break
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _MAX_PAUSE_S)
        if sent < total:
            _emit(downstream, spans, sent, total)

    # --- released by the engine's worker: analysis off the request path --------------------------

    def _release(self, trace_id: int, held: Held[ReadableSpan, _TraceState], deadline: float | None) -> None:
        """Analyse one trace, export its spans (annotated where flagged), route its findings."""
        spans = held.spans
        started = time.thread_time()
        # Annotate only what we alone hand to the exporter.
        findings = analyse_trace(
            trace_id,
            spans,
            READABLE,
            self._detectors,
            self.stats,
            annotate=bool(self._downstream),
            first_requests=self._first_requests,
        )
        self._hand_over(spans, deadline)
        # Charged: analysis, export hand-off and call-site capture (conservative: the hand-off is
        # work the SDK would do anyway, on the request thread). Waiting for the exporter is not.
        state = held.state
        cost = time.thread_time() - started + state.request_path_s
        with self._engine.lock:
            self._budget.charge(cost, state.operation, state.mounted)
        if findings:
            self.findings.submit(findings)

    # --- lifecycle --------------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Analyse and export everything held now, complete or not, then flush downstream."""
        deadline = time.monotonic() + timeout_millis / 1000
        if self.watcher is not None:
            self.watcher.flush()
        flushed = self._engine.drain(deadline)
        flushed = self.findings.flush(max(0.0, deadline - time.monotonic())) and flushed
        for downstream in self._downstream:
            remaining_ms = int(max(0.0, deadline - time.monotonic()) * 1000)
            flushed = downstream.force_flush(remaining_ms) and flushed
        return flushed

    def shutdown(self) -> None:
        if self.watcher is not None:
            self.watcher.shutdown()
        self._engine.stop(timeout_s=5)
        self._engine.drain(time.monotonic() + 5)
        self.findings.shutdown()
        for downstream in self._downstream:
            downstream.shutdown()


def _emit(downstream: SpanProcessor, spans: Sequence[ReadableSpan], start: int, end: int) -> None:
    on_end = downstream.on_end
    for index in range(start, end):
        try:
            on_end(spans[index])
        except Exception:
            logger.debug("otel-perf: export processor failed", exc_info=True)


_FIRST_PAUSE_S = 0.001  # waiting for room: the exporter's worker frees a batch's worth per export
_MAX_PAUSE_S = 0.02
# Attribute names (queue, capacity, batch size, closed flag, worker thread) of the queue's owner.
_BATCH_PROCESSOR = ("_queue", "_max_queue_size", "_max_export_batch_size", "_shutdown", "_worker_thread")
_OLD_BSP = ("queue", "max_queue_size", "max_export_batch_size", "done", "worker_thread")


class _ExportQueue:
    """The bounded queue of an SDK `BatchSpanProcessor`, read from outside to pace the hand-over.

    SDK internals, read defensively. SDK >= 1.34: `bsp._batch_processor` (the shared
    `BatchProcessor`) has `_queue` (a deque with maxlen), `_max_queue_size`, `_max_export_batch_size`,
    `_worker_awaken` (an Event), `_shutdown`, `_worker_thread`, `_pid`. SDK 1.30-1.33: the BSP itself
    has `queue`, `max_queue_size`, `max_export_batch_size`, `condition`, `done`, `worker_thread`,
    `_pid`. Anything else (other processors, subclasses with other internals): `of` returns None and
    spans are handed over at once, as without pacing.
    """

    __slots__ = ("_closed", "_owner", "_queue", "_thread", "batch_size", "capacity", "fill_to", "stalled")

    def __init__(
        self, owner: object, queue: str, capacity: str, batch_size: str, closed: str, thread: str
    ) -> None:
        self._owner = owner
        self._queue, self._closed, self._thread = queue, closed, thread
        self.capacity: int = getattr(owner, capacity)
        self.batch_size: int = getattr(owner, batch_size)
        # Filled to at most 3/4 (never below one export batch, which wakes the worker): room is left
        # for spans the request threads hand over meanwhile (traces not held).
        self.fill_to = self.capacity - min(self.capacity // 4, self.capacity - self.batch_size)
        self.stalled = False

    @classmethod
    def of(cls, processor: SpanProcessor) -> _ExportQueue | None:
        try:
            if not isinstance(processor, BatchSpanProcessor):
                return None
            inner = getattr(processor, "_batch_processor", None)
            view = cls(inner, *_BATCH_PROCESSOR) if inner is not None else cls(processor, *_OLD_BSP)
            queue = getattr(view._owner, view._queue)
            if not (
                isinstance(queue, deque)
                and isinstance(view.capacity, int)
                and isinstance(view.batch_size, int)
                and queue.maxlen == view.capacity
                and 0 < view.batch_size <= view.capacity
            ):
                return None
            return view
        except Exception:  # internals we don't know: no pacing
            return None

    def room(self) -> int | None:
        """Spans the queue takes now; None when pacing can't help (its worker gone, shut down, this
        a forked child it hasn't reset in yet, or stalled: full and not draining)."""
        owner = self._owner
        thread = getattr(owner, self._thread, None)
        if (
            getattr(owner, self._closed, True)
            or getattr(owner, "_pid", None) not in (None, os.getpid())
            or thread is None
            or not thread.is_alive()
        ):
            return None
        length: int = len(getattr(owner, self._queue))
        if self.stalled:
            if length >= self.batch_size:
                return None
            self.stalled = False  # it drained: pace again
        return max(0, int(self.fill_to) - length)

    def wake(self) -> None:
        """Wake the exporter's worker (as the BSP does itself once a batch is queued)."""
        owner = self._owner
        event = getattr(owner, "_worker_awaken", None)
        if event is not None:
            event.set()
            return
        condition = getattr(owner, "condition", None)
        if condition is not None:
            with condition:
                condition.notify()
