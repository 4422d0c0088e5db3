"""The engine both hosts run traces through: hold each trace's spans until it is due, then release
it, outside the lock, on one worker thread.

The span processor (SDK `ReadableSpan`s, due when its local root ended plus a grace) and the
analyzer (OTLP protobuf spans, due when no span arrived for a while) differ only in what they hold
per trace (`Held.state`), when they call `schedule`, and what `release` does with a due trace.
Everything else is here, once: the bounds (the host decides what happens on overflow), the
maximum hold for traces that never become due, the lazily started worker, `drain` for flush and
shutdown, re-init in a forked child, and the counters (`EngineStats`).

The host does compound updates under `lock` (methods marked "caller holds `lock`"); the worker
calls `release` with no lock held.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

S = TypeVar("S")  # the span type: SDK ReadableSpan, OTLP protobuf span
H = TypeVar("H")  # what the host keeps per trace

# Why spans were passed on unanalysed (`EngineStats.unanalysed`), and traces not held.
OVER_MAX_TRACES = "max_traces"
OVER_MAX_SPANS_PER_TRACE = "max_spans_per_trace"
OVER_MAX_BUFFERED_SPANS = "max_buffered_spans"


@dataclass(frozen=True)
class Counter:
    """One counter of a stats object, as the exporters name it: OpenTelemetry `otel_perf.` and the
    field with its first `_` a dot (`otel_perf.traces.held`), Prometheus `otel_perf_analyzer_` and
    the field (`otel_perf_analyzer_traces_held`)."""

    field: str  # of the stats object
    unit: str  # UCUM, as OpenTelemetry takes it
    description: str
    by_reason: str | None = None  # the stats field splitting it by reason (`reason` label)


@dataclass
class EngineStats:
    """The counters both hosts share (`ProcessorStats`, `PipelineStats` extend it)."""

    traces_held: int = 0  # traces taken in for analysis
    spans_held: int = 0
    traces_timed_out: int = 0  # released at the maximum hold, never due
    traces_analysed: int = 0
    spans_analysed: int = 0
    findings: int = 0
    analysis_errors: int = 0
    spans_unanalysed: int = 0  # passed on without analysis; by reason in `unanalysed`
    unanalysed: dict[str, int] = field(default_factory=dict)

    def count_unanalysed(self, reason: str, spans: int = 1) -> None:
        self.spans_unanalysed += spans
        self.unanalysed[reason] = self.unanalysed.get(reason, 0) + spans


ENGINE_COUNTERS = (
    Counter("traces_held", "{trace}", "Traces held for analysis."),
    Counter("spans_held", "{span}", "Spans held for analysis."),
    Counter("traces_analysed", "{trace}", "Traces analysed."),
    Counter("spans_analysed", "{span}", "Spans analysed."),
    Counter(
        "spans_unanalysed",
        "{span}",
        "Spans passed on without analysis (a bound was hit), by reason.",
        "unanalysed",
    ),
    Counter("findings", "{finding}", "Findings of the detectors (the analyzer: those to alert on)."),
    Counter(
        "traces_timed_out", "{trace}", "Traces released at the maximum hold, never due (no local root end)."
    ),
    Counter("analysis_errors", "{trace}", "Traces whose analysis failed (passed on unannotated)."),
)


class Held(Generic[S, H]):
    """One trace in the buffer: its spans, the host's state for it, and when it is due."""

    __slots__ = ("due", "spans", "started", "state")

    def __init__(self, state: H, started: float) -> None:
        self.spans: list[S] = []
        self.state = state
        self.started = started  # time.monotonic() when taken in
        self.due: float | None = None  # set by `schedule`


Release = Callable[[int, Held[S, H], "float | None"], None]


class HoldBuffer(Generic[S, H]):
    """Traces held until due, released one by one by `release(trace_id, held, deadline)`.

    `delay_s`: a scheduled trace is due this long after its last `schedule` (one delay for all,
    so the order of scheduling is the order of due times). `max_hold_s`: a trace still held this
    long after it was taken in (never due: the processor's local root never ended) is released
    all the same, counted in `traces_timed_out`; None: never.
    Bounds: `max_traces`, `max_spans_per_trace`, `max_buffered_spans`.
    """

    def __init__(
        self,
        release: Release[S, H],
        stats: EngineStats,
        *,
        delay_s: float,
        max_hold_s: float | None = None,
        max_traces: int = sys.maxsize,
        max_spans_per_trace: int = sys.maxsize,
        max_buffered_spans: int = sys.maxsize,
        thread_name: str = "otel-perf-analysis",
        after_fork: Callable[[], None] | None = None,
    ) -> None:
        """`after_fork`: the host's own re-init in a forked child, after the engine's."""
        self._release = release
        self.stats = stats
        self._delay_s = delay_s
        self._max_hold_s = max_hold_s
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self.max_buffered_spans = max_buffered_spans
        self._thread_name = thread_name
        self._after_fork = after_fork
        self._init_state()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._reinit_in_child)
            os.register_at_fork(after_in_child=lambda: (method := weak_reinit()) and method())

    def _init_state(self) -> None:
        """(Re)create the lock, the buffer and the worker slot: at start and in a forked child."""
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        # Read without the lock (a lookup); replaced only here, so a host keeping a reference re-reads
        # it in `after_fork`.
        self.traces: dict[int, Held[S, H]] = {}
        self._due: OrderedDict[int, None] = OrderedDict()  # scheduled traces, first due first
        self.buffered = 0  # spans held in all
        self._releasing = 0  # traces taken by a release and not yet released
        self._next_timeout_scan = 0.0
        self._worker: threading.Thread | None = None
        self._stopping = False

    def _reinit_in_child(self) -> None:
        self._init_state()
        if self._after_fork is not None:
            self._after_fork()

    @property
    def worker_alive(self) -> bool:
        """False once stopped, or when the worker died (True before it was needed)."""
        worker = self._worker
        return not self._stopping and (worker is None or worker.is_alive())

    # --- the host's updates: caller holds `lock` -------------------------------------------------

    def full(self) -> bool:
        """Whether another trace would exceed `max_traces`. Caller holds `lock`."""
        return len(self.traces) >= self.max_traces

    def fits(self, spans: int) -> bool:
        """Whether `spans` more stay within `max_buffered_spans`."""
        return self.buffered + spans <= self.max_buffered_spans

    def open(self, trace_id: int, state: H) -> Held[S, H]:
        """Take a trace in (bounds are the host's to check first: `full`). Caller holds `lock`."""
        held = self.traces[trace_id] = Held(state, time.monotonic())
        self.stats.traces_held += 1
        return held

    def add(self, held: Held[S, H], span: S) -> str | None:
        """Hold one span; the bound it would exceed instead (it is not held). Caller holds `lock`."""
        if len(held.spans) >= self.max_spans_per_trace:
            return OVER_MAX_SPANS_PER_TRACE
        if self.buffered >= self.max_buffered_spans:
            return OVER_MAX_BUFFERED_SPANS
        held.spans.append(span)
        self.buffered += 1
        self.stats.spans_held += 1
        return None

    def extend(self, held: Held[S, H], spans: list[S]) -> None:
        """Hold spans the host made room for (`fits`). Caller holds `lock`."""
        held.spans.extend(spans)
        self.buffered += len(spans)
        self.stats.spans_held += len(spans)

    def schedule(self, trace_id: int, held: Held[S, H]) -> None:
        """Make the trace due `delay_s` from now (again, if it was). Caller holds `lock`."""
        held.due = time.monotonic() + self._delay_s
        due = self._due
        first = not due
        if trace_id in due:
            due.move_to_end(trace_id)
        else:
            due[trace_id] = None
        self.ensure_worker()
        if first:  # else the worker already waits for an earlier due time
            self._wake.notify()

    def ensure_worker(self) -> None:
        """Start the worker (lazily: a pre-fork master never starts one). Caller holds `lock`."""
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
            self._worker.start()

    @property
    def worker_started(self) -> bool:
        return self._worker is not None

    # --- the worker --------------------------------------------------------------------------------

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

    def _next_wait(self) -> float:
        first = next(iter(self._due), None)
        if first is not None:
            return max(0.0, (self.traces[first].due or 0.0) - time.monotonic())
        return 1.0 if self.traces else 5.0

    def _take_due(self, everything: bool = False) -> list[tuple[int, Held[S, H]]]:
        """Pop the traces that are due (or held too long; all of them with `everything`), first
        due first. Caller holds `lock`."""
        now = time.monotonic()
        traces, order = self.traces, self._due
        taken: list[tuple[int, Held[S, H]]] = []
        while order:
            trace_id = next(iter(order))
            held = traces[trace_id]
            if not everything and (held.due or 0.0) > now:
                break
            del order[trace_id], traces[trace_id]
            taken.append((trace_id, held))
        if everything:
            taken.extend(traces.items())
            traces.clear()
        elif self._max_hold_s is not None and now >= self._next_timeout_scan:
            # Traces never scheduled: a scan of all held traces, so at most once a second.
            self._next_timeout_scan = now + 1.0
            oldest_allowed = now - self._max_hold_s
            expired = [trace_id for trace_id, held in traces.items() if held.started < oldest_allowed]
            for trace_id in expired:
                order.pop(trace_id, None)
                taken.append((trace_id, traces.pop(trace_id)))
            self.stats.traces_timed_out += len(expired)
        for _, held in taken:
            self.buffered -= len(held.spans)
        self._releasing += len(taken)
        return taken

    def _release_all(self, batch: list[tuple[int, Held[S, H]]], deadline: float | None = None) -> None:
        """Release traces taken by `_take_due` (which counted them in `_releasing`)."""
        try:
            for trace_id, held in batch:
                self._release(trace_id, held, deadline)
        finally:
            with self._wake:
                self._releasing -= len(batch)
                self._wake.notify_all()

    # --- lifecycle ---------------------------------------------------------------------------------

    def drain(self, deadline: float) -> bool:
        """Release everything held now (on the calling thread), and wait for what the worker is
        releasing; False when `deadline` (time.monotonic()) passed first."""
        with self.lock:
            batch = self._take_due(everything=True)
        self._release_all(batch, deadline)
        with self._wake:
            while self._releasing > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(timeout=remaining)
        return True

    def stop(self, timeout_s: float) -> None:
        """Stop the worker (it releases what is due first); `drain` releases the rest."""
        with self.lock:
            self._stopping = True
            self._wake.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=timeout_s)
