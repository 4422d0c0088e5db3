"""The alert router: decides which findings become alerts, then delivers them off-thread.

Decisions (synchronous, cheap): a minimum severity; fingerprint dedup with a cooldown (a repeat
inside the cooldown is counted, not sent, unless it is more severe than what was sent: escalation
goes through); a per-type hourly limit. Time is the findings' own (span timestamps), so
`otel-perf analyze` of last week's traces routes exactly as live traffic did. Live hosts bound that
time by the receive time (± `max_clock_skew_s`): a sender with a wrong clock, or anyone who can
reach the port, can't date findings in 2100 and so fill the hourly budget or a cooldown forever.

Delivery (a worker thread, bounded queue): each sink is called in turn; a sink that raises or
times out is counted and logged, and never affects the others or the caller.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from otel_perf.alerting.alert import Alert, Sink
from otel_perf.processors.config import Section
from otel_perf.processors.findings import Finding, Severity

logger = logging.getLogger("otel_perf.alerting")

_HOUR_NS = 3600 * 10**9
_MAX_FINGERPRINTS = 10_000


class RouterSettings(Section):
    """`OTEL_PERF_ALERTS_*`: which findings become alerts."""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_ALERTS_")

    min_severity: Severity = Field(Severity.LOW, description="low, medium, high or critical.")
    cooldown_s: float = Field(
        900, ge=0, description="A finding (same fingerprint) alerts at most once per cooldown."
    )
    max_per_hour: int = Field(
        60, ge=1, description="Alerts per type per hour; the rest are counted, not sent."
    )
    queue_size: int = Field(1000, ge=1, description="Alerts waiting for delivery; overflow is counted.")
    max_clock_skew_s: float = Field(
        300,
        ge=0,
        description="Span time further than this from the receive time is routed at the receive time "
        "(cooldowns and rate limits can't be moved by a wrong clock).",
    )

    @field_validator("min_severity", mode="before")
    @classmethod
    def _parse_severity(cls, value: Any) -> Severity:
        return Severity.parse(value) if isinstance(value, str) else value


@dataclass
class RouterStats:
    received: int = 0
    sent: int = 0
    suppressed_duplicate: int = 0
    suppressed_rate_limit: int = 0
    suppressed_severity: int = 0
    dropped_queue_full: int = 0
    sink_failures: dict[str, int] = field(default_factory=dict)


@dataclass
class _Seen:
    last_sent_ns: int
    severity: Severity
    suppressed: int = 0


class AlertRouter:
    def __init__(
        self,
        settings: RouterSettings | None = None,
        sinks: Sequence[Sink] = (),
        *,
        replay: bool = False,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """`replay`: route by span time alone (offline analysis of exported files: there is no
        receive time); otherwise span time is bounded by the receive time, read from `clock`."""
        self.settings = settings or RouterSettings()
        self._replay = replay
        self._clock = clock
        self.sinks = list(sinks)
        self.stats = RouterStats()
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._sent_times: dict[str, deque[int]] = {}
        self._init_threading()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._init_threading)
            os.register_at_fork(after_in_child=lambda: (method := weak_reinit()) and method())

    def _init_threading(self) -> None:
        """Locks, queue and worker: new at start and in a forked child (threads don't survive fork)."""
        self._decide_lock = threading.Lock()
        self._queue: queue.Queue[Alert | None] = queue.Queue(self.settings.queue_size)
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()

    # --- decisions --------------------------------------------------------------------------------

    def decide(self, finding: Finding) -> Alert | None:
        """The alert to send for `finding`, or None when it is suppressed (and counted)."""
        config = self.settings
        with self._decide_lock:
            self.stats.received += 1
            if finding.resolved:
                return self._resolution(finding)
            if finding.severity < config.min_severity:
                self.stats.suppressed_severity += 1
                return None
            now = self._routing_time(finding.time_ns)
            seen = self._seen.get(finding.fingerprint)
            if seen is not None:
                in_cooldown = now - seen.last_sent_ns < config.cooldown_s * 1e9
                if in_cooldown and finding.severity <= seen.severity:
                    seen.suppressed += 1
                    self.stats.suppressed_duplicate += 1
                    return None
            sent_times = self._sent_times.setdefault(finding.type, deque())
            while sent_times and now - sent_times[0] >= _HOUR_NS:
                sent_times.popleft()
            if len(sent_times) >= config.max_per_hour:
                self.stats.suppressed_rate_limit += 1
                if seen is None:  # remembered, so its occurrences are counted when it does go out
                    seen = self._seen[finding.fingerprint] = _Seen(0, Severity.LOW)
                seen.suppressed += 1
                return None
            sent_times.append(now)
            occurrences = 1 + (seen.suppressed if seen is not None else 0)
            self._seen[finding.fingerprint] = _Seen(now, finding.severity)
            self._seen.move_to_end(finding.fingerprint)
            while len(self._seen) > _MAX_FINGERPRINTS:
                self._seen.popitem(last=False)
            return Alert(finding, occurrences)

    def _resolution(self, finding: Finding) -> Alert | None:
        """A resolution goes out whatever the cooldown, severity or rate limit (a firing alert with no
        resolution is worse than one message more), unless its alert was held back here. Unknown
        here is not held back: another worker of the service may have sent it (the monitors resolve
        only what fired). Caller holds the lock."""
        seen = self._seen.pop(finding.fingerprint, None)
        if seen is not None and not seen.last_sent_ns:
            self.stats.suppressed_duplicate += 1
            return None
        return Alert(finding)

    def _routing_time(self, span_time_ns: int) -> int:
        """The time a decision is made at: span time, bounded by the receive time unless replaying."""
        if self._replay and span_time_ns:
            return span_time_ns
        received = self._clock()
        if not span_time_ns:
            return received
        skew = int(self.settings.max_clock_skew_s * 1e9)
        return min(max(span_time_ns, received - skew), received + skew)

    def remember(self, fingerprint: str, time_ns: int, severity: Severity) -> None:
        """Another host alerted this finding (seen as its alert span in passing): treat it as sent,
        so the cooldown covers both hosts."""
        time_ns = self._routing_time(time_ns)
        with self._decide_lock:
            seen = self._seen.get(fingerprint)
            if seen is None or seen.last_sent_ns < time_ns:
                self._seen[fingerprint] = _Seen(time_ns, max(severity, seen.severity) if seen else severity)
                self._seen.move_to_end(fingerprint)

    # --- delivery ---------------------------------------------------------------------------------

    def submit(self, findings: Sequence[Finding]) -> None:
        """Decide now, deliver on the worker. Never blocks: a full queue drops and counts."""
        for finding in findings:
            alert = self.decide(finding)
            if alert is None:
                continue
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                self.stats.dropped_queue_full += 1
                logger.warning("otel-perf: alert queue full, dropped %s", finding.alert_name)
                continue
            self._ensure_worker()

    def deliver(self, alert: Alert) -> None:
        """Hand one alert to every sink, containing each sink's failure."""
        for sink in self.sinks:
            try:
                sink.send(alert)
            except Exception as error:
                failures = self.stats.sink_failures
                failures[sink.name] = failures.get(sink.name, 0) + 1
                if failures[sink.name] in (1, 10, 100) or failures[sink.name] % 1000 == 0:
                    logger.warning(
                        "otel-perf: %s sink failed (%d so far): %s", sink.name, failures[sink.name], error
                    )
        self.stats.sent += 1

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="otel-perf-alerts", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                if alert is None:
                    return
                self.deliver(alert)
            finally:
                self._queue.task_done()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until queued alerts were delivered (True) or the timeout passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception:
                logger.debug("otel-perf: flushing %s failed", sink.name, exc_info=True)
        return True

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        worker = self._worker
        if worker is not None and worker.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            worker.join(timeout=1)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.debug("otel-perf: closing %s failed", sink.name, exc_info=True)
