"""The watcher: every request's duration into its window, closed windows to the monitors.

`record` is the whole cost on the request path: one append to a bounded deque (entry spans only,
analysed by the CPU share or not, so the monitors see all traffic). A background thread (or, when
replaying files, the caller) folds them into per-window sketches, saves each writer's part every
`flush_interval_s`, and closes a window once its end is `lateness_s` behind the clock: the window
is sealed (every writer's part merged, see `store`), each monitor evaluates the series, and the
findings go to the handler.

Time comes from span end times. Live, they are bounded by the receive time (± `max_clock_skew_s`)
and the clock is the wall clock; replaying, the clock is the latest span time seen, so ten days
of exported traces give the answer live traffic would have.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors.config import Section
from otel_perf.processors.findings import Finding, FindingsHandler
from otel_perf.processors.monitors.base import Monitor
from otel_perf.processors.monitors.store import WindowStore
from otel_perf.processors.monitors.windows import REQUESTS, RESOURCE, Aggregate, SeriesKey, Window
from otel_perf.processors.statefile import MEMORY

logger = logging.getLogger("otel_perf.monitors")


def default_state_path() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "otel-perf" / "monitors.sqlite3")


class MonitorSettings(Section):
    """`OTEL_PERF_MONITOR_*`: the windows every monitor (trend, error rate) reads."""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_MONITOR_")

    enabled: bool = Field(True, description="Watch operations over time (trends, error rates).")
    window_s: float = Field(3600, gt=0, description="Length of a window (one point of a trend).")
    history_days: float = Field(28, gt=0, description="How long windows are kept (the baselines).")
    lateness_s: float = Field(
        60, ge=0, description="A window is judged this long after it ends (spans still arriving)."
    )
    flush_interval_s: float = Field(
        10, gt=0, description="How often each process saves its part of the open windows."
    )
    state_path: str = Field(
        "",
        description="SQLite file of windows and open alerts, shared by the processes of a host; unset: "
        "$XDG_STATE_HOME/otel-perf/monitors.sqlite3 (~/.local/state/…), but nothing for `otel-perf analyze`; "
        "`:memory:`: kept in memory only.",
    )
    max_pending: int = Field(100_000, ge=1, description="Requests waiting to be folded in; more are counted.")
    max_series: int = Field(2000, ge=1, description="(service, operation) pairs watched; more are counted.")
    max_clock_skew_s: float = Field(
        300,
        ge=0,
        description="Span end times further than this from the receive time count at the receive time.",
    )


@dataclass
class WatcherStats:
    requests: int = 0
    dropped_pending: int = 0  # over max_pending
    dropped_late: int = 0  # their window was already judged
    dropped_series: int = 0  # over max_series
    windows_judged: int = 0
    findings: int = 0
    errors: int = 0


# (series kind, service, operation, version, end time ns, duration ms or percent, failed, how many)
_Observation = tuple[str, str, str, "str | None", int, float, bool, int]
Sampler = Callable[[], Sequence[tuple[str, float]]]


class Watcher:
    def __init__(
        self,
        settings: MonitorSettings | None = None,
        monitors: Sequence[Monitor] = (),
        findings: FindingsHandler | None = None,
        *,
        replay: bool = False,
        clock: Callable[[], int] = time.time_ns,
        windows: Mapping[str, float] | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        """`replay`: time is the spans' alone (offline files; call `advance`/`finish`), no thread.
        `windows`: window length (s) by series kind, where not `settings.window_s`. `sampler`:
        called every flush interval for resource samples (series name, percent) of `service`."""
        self.settings = settings = settings or MonitorSettings.load()
        self.monitors = list(monitors)
        self.findings = findings
        self._replay = replay
        self._clock = clock
        lengths = {REQUESTS: settings.window_s, **(windows or {})}
        self._window_ns = {kind: int(length * 1e9) for kind, length in lengths.items()}
        self.sampler = sampler
        self.service: str | None = None  # whose resources the sampler samples (set by the host)
        self._lateness_ns = int(settings.lateness_s * 1e9)
        self._skew_ns = int(settings.max_clock_skew_s * 1e9)
        self.stats = WatcherStats()
        self._init_state()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._init_state)
            os.register_at_fork(after_in_child=lambda: (method := weak_reinit()) and method())

    def _init_state(self) -> None:
        """At start and in a forked child: the parent's open windows are the parent's to save."""
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._pending: deque[_Observation] = deque()
        self._open: dict[tuple[SeriesKey, int], Aggregate] = {}
        self._dirty: set[tuple[SeriesKey, int]] = set()
        self._series: set[SeriesKey] = set()
        self._history: dict[SeriesKey, list[Window]] = {}
        self._watermark = 0
        self._closed_until = 0  # the clock when windows were last closed: older ones are judged
        self._next_flush = 0.0
        self._next_sample = 0.0
        self._store: WindowStore | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.writer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    @property
    def store(self) -> WindowStore:
        store = self._store
        if store is None:
            given = self.settings.state_path
            path = given or (MEMORY if self._replay else default_state_path())
            store = self._store = WindowStore(path, setting="OTEL_PERF_MONITOR_STATE_PATH" if given else "")
        return store

    # --- the request path ---------------------------------------------------------------------

    def record(
        self, service: str, operation: str, version: str | None, end_ns: int, duration_ns: int, failed: bool
    ) -> None:
        """One finished request (entry span). Never blocks, never raises."""
        pending = self._pending
        if len(pending) >= self.settings.max_pending:
            self.stats.dropped_pending += 1
            return
        pending.append((REQUESTS, service, operation, version, end_ns, duration_ns / 1e6, failed, 1))
        if not self._replay and self._thread is None:
            self._start()

    def sample(self, service: str, name: str, percent: float, time_ns: int) -> None:
        """One utilisation sample of a resource (`resources.series_name`), e.g. from metrics."""
        if len(self._pending) >= self.settings.max_pending:
            self.stats.dropped_pending += 1
            return
        self._pending.append((RESOURCE, service, name, None, time_ns, percent, False, 1))
        if not self._replay and self._thread is None:
            self._start()

    def record_many(
        self,
        service: str,
        operation: str,
        version: str | None,
        time_ns: int,
        failed: bool,
        durations: Sequence[tuple[float, int]],
    ) -> None:
        """Requests known only by their number per duration (ms), e.g. from a histogram."""
        if len(self._pending) + len(durations) > self.settings.max_pending:
            self.stats.dropped_pending += 1
            return
        for duration_ms, count in durations:
            self._pending.append((REQUESTS, service, operation, version, time_ns, duration_ms, failed, count))
        if not self._replay and self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="otel-perf-monitors", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        interval = min(self.settings.flush_interval_s, max(self.settings.lateness_s / 2, 0.05))
        while not self._stopping:
            self._wake.wait(interval)
            try:
                self._take_samples()
                self.advance()
            except Exception:
                self.stats.errors += 1
                logger.exception("otel-perf: watching windows failed; going on")

    def _take_samples(self) -> None:
        sampler, service = self.sampler, self.service
        now = time.monotonic()
        if sampler is None or service is None or now < self._next_sample:
            return
        self._next_sample = now + self.settings.flush_interval_s
        time_ns = int(self._clock())
        for name, percent in sampler():
            self.sample(service, name, percent, time_ns)

    # --- folding in, closing windows ------------------------------------------------------------

    def _now(self) -> int:
        return self._watermark if self._replay else int(self._clock())

    def advance(self, *, final: bool = False) -> None:
        """Fold pending requests in, save this writer's parts when due, judge the windows that closed.
        `final` (replaying, at the end of the input): judge every complete window now."""
        with self._lock:
            self._fold()
            now = self._now()
            monotonic = time.monotonic()
            lateness = 0 if final else self._lateness_ns
            windows = self._window_ns
            closed = {
                (start, key) for key, start in self._open if start + windows[key.kind] + lateness <= now
            }
            if monotonic >= self._next_flush or final:
                # Parts are saved well within the lateness: a window is sealed with every writer's.
                self._next_flush = monotonic + min(
                    self.settings.flush_interval_s, self.settings.lateness_s / 2
                )
                self._save_parts()
                if not self._replay:
                    # Windows a stopped process left unsealed, of series this one watches too (not
                    # another service's that shares the file, with its own settings).
                    closed.update(
                        (start, key)
                        for key, start in self.store.unsealed(now - lateness - min(windows.values()))
                        if key in self._series and start + windows[key.kind] + lateness <= now
                    )
            for start, key in sorted(closed):
                self._close(key, start)
            self._closed_until = now
            if closed:
                self.store.prune(now - int(self.settings.history_days * 86400e9))

    def finish(self) -> None:
        """Replaying: the input ended; judge every window it completed."""
        self.advance(final=True)

    def _fold(self) -> None:
        pending, windows = self._pending, self._window_ns
        live = not self._replay
        now = int(self._clock()) if live else 0
        while pending:
            kind, service, operation, version, end_ns, value, failed, count = pending.popleft()
            window_ns = windows.get(kind)
            if window_ns is None:  # no monitor reads this kind
                continue
            if kind == REQUESTS:
                self.stats.requests += count
            if live and not now - self._skew_ns <= end_ns <= now + self._skew_ns:
                end_ns = now
            elif not live and end_ns > self._watermark:
                self._watermark = end_ns
            key = SeriesKey(service, operation, kind)
            if key not in self._series:
                if len(self._series) >= self.settings.max_series:
                    self.stats.dropped_series += 1
                    continue
                self._series.add(key)
            start = end_ns - end_ns % window_ns
            slot = (key, start)
            aggregate = self._open.get(slot)
            if aggregate is None:
                if start + window_ns + self._lateness_ns <= self._closed_until and not self._replay:
                    self.stats.dropped_late += 1
                    continue
                aggregate = self._open[slot] = Aggregate()
            aggregate.add(version, value, failed, count)
            self._dirty.add(slot)

    def _save_parts(self) -> None:
        store = self.store
        for key, start in self._dirty:
            store.save_part(key, start, self.writer, self._open[(key, start)])
        self._dirty.clear()

    def _close(self, key: SeriesKey, start: int) -> None:
        store = self.store
        if (key, start) in self._dirty:
            store.save_part(key, start, self.writer, self._open[(key, start)])
            self._dirty.discard((key, start))
        self._open.pop((key, start), None)
        window_ns = self._window_ns[key.kind]
        merged, judge = store.seal(key, start)
        if merged is None:
            return
        history = self._history_of(key)
        newest = history[-1].start_ns if history else self._now() - int(self.settings.history_days * 86400e9)
        # Windows sealed since (by this writer or another: one with no part of ours too).
        history.extend(
            Window(each, each + window_ns, aggregate.total, aggregate.versions)
            for each, aggregate in store.windows(key, newest + 1)
        )
        keep_from = start - int(self.settings.history_days * 86400e9)
        while history and history[0].start_ns < keep_from:
            history.pop(0)
        if judge and history and history[-1].start_ns == start:
            self.stats.windows_judged += 1
            self._judge(key, history)

    def _history_of(self, key: SeriesKey) -> list[Window]:
        history = self._history.get(key)
        if history is None:
            since = self._now() - int(self.settings.history_days * 86400e9)
            window_ns = self._window_ns[key.kind]
            history = self._history[key] = [
                Window(start, start + window_ns, aggregate.total, aggregate.versions)
                for start, aggregate in self.store.windows(key, since)
            ]
        return history

    def _judge(self, key: SeriesKey, history: list[Window]) -> None:
        found: list[Finding] = []
        for monitor in self.monitors:
            if monitor.kind != key.kind:
                continue
            try:
                state = self.store.state(monitor.name, key)
                findings, new_state = monitor.evaluate(key, history, state)
                if new_state != state:
                    self.store.save_state(monitor.name, key, new_state)
                for finding in findings:
                    finding.source = "monitor"
                found.extend(findings)
            except Exception:
                self.stats.errors += 1
                logger.exception(
                    "otel-perf: monitor %s failed on %s %s", monitor.name, key.service, key.operation
                )
        if found:
            self.stats.findings += len(found)
            if self.findings is not None:
                self.findings.submit(found)

    # --- lifecycle ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Fold in what is pending and save this writer's parts (a restart goes on from them)."""
        with self._lock:
            self._fold()
            if self._dirty:
                self._save_parts()

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        try:
            self.flush()
            with self._lock:
                if self._store is not None:  # the last connection out folds the WAL into the file
                    self._store.close()
                    self._store = None
        except Exception:
            logger.exception("otel-perf: saving the open windows failed")
