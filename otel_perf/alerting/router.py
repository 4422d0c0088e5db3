"""The alert router: decides which findings become alerts, then delivers them off-thread.

Decisions (synchronous, cheap): a minimum severity; fingerprint dedup with a cooldown (a repeat
inside the cooldown is counted, not sent, unless it is more severe than what was sent: escalation
goes through); a per-type hourly limit. Time is the findings' own (span timestamps), so
`otel-perf analyze` of last week's traces routes exactly as live traffic did. Live hosts bound that
time by the receive time (± `max_clock_skew_s`): a sender with a wrong clock, or anyone who can
reach the port, can't date findings in 2100 and so fill the hourly budget or a cooldown forever.

Delivery (`outbox`): each alert is kept once per sink under an idempotency key (fingerprint and
cooldown window); each sink has its own worker, so a webhook that hangs delays neither the file nor
the OTLP sink; a failure is counted, logged and retried with backoff; with a file
(`OTEL_PERF_ALERTS_OUTBOX_PATH`), what a stopped or killed process had not delivered is delivered
by the next one. Nothing here blocks the caller.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from otel_perf.alerting.alert import Alert, Sink
from otel_perf.alerting.outbox import Outbox
from otel_perf.processors.config import Section
from otel_perf.processors.findings import Finding, Severity
from otel_perf.processors.statefile import MEMORY

logger = logging.getLogger("otel_perf.alerting")

_HOUR_NS = 3600 * 10**9
# A claimed alert another process may take over after this (its owner died mid-delivery): longer
# than one delivery attempt takes (a webhook's timeout is 5 s).
_LEASE_S = 20.0
_IDLE_WAIT_S = 1.0
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
    outbox_path: str = Field(
        "",
        description="SQLite file keeping alerts until every sink has them (across restarts); empty: "
        "$XDG_STATE_HOME/otel-perf/alerts.sqlite3 (~/.local/state/…); :memory: for none.",
    )
    max_pending_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="Alerts waiting for delivery, in bytes; beyond, new ones are dropped and counted.",
    )
    retry_for_s: float = Field(
        86_400, gt=0, description="How long a failed delivery is retried (backoff 1 s doubling to 60 s)."
    )
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


def _destination(sink: Sink) -> str:
    return str(getattr(sink, "destination", sink.name))


def default_outbox_path() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "otel-perf" / "alerts.sqlite3")


def open_outbox(settings: RouterSettings) -> Outbox:
    """The outbox the settings ask for (composition roots; a router built without one keeps its
    outbox in memory). Our default's directory is created; a path the user gave must have one."""
    return Outbox(
        settings.outbox_path or default_outbox_path(),
        max_pending_bytes=settings.max_pending_bytes,
        retry_for_s=settings.retry_for_s,
        keep_delivered_s=max(settings.cooldown_s, 3600.0),
        setting="OTEL_PERF_ALERTS_OUTBOX_PATH" if settings.outbox_path else "",
    )


class AlertRouter:
    def __init__(
        self,
        settings: RouterSettings | None = None,
        sinks: Sequence[Sink] = (),
        *,
        replay: bool = False,
        replay_bounds: tuple[int, int] | None = None,
        clock: Callable[[], int] = time.time_ns,
        outbox: Outbox | None = None,
    ) -> None:
        """`replay`: route by span time alone (offline analysis of exported files: there is no
        receive time), within `replay_bounds` (the replay's time span: a span dated 2200 or 1970
        among last week's is routed at its edge); otherwise span time is bounded by the receive
        time, read from `clock`. `outbox`: where alerts wait for their sinks (`open_outbox`); in
        memory when not given."""
        self.settings = settings = settings or RouterSettings()
        self._replay = replay
        self._replay_bounds = replay_bounds
        self._clock = clock
        self.sinks = list(sinks)
        self.stats = RouterStats()
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._sent_times: dict[str, deque[int]] = {}
        self.outbox = outbox or Outbox(
            MEMORY, max_pending_bytes=settings.max_pending_bytes, retry_for_s=settings.retry_for_s
        )
        self._init_threading()
        if hasattr(os, "register_at_fork"):
            weak_reinit = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (method := weak_reinit()) and method())

    def _init_threading(self) -> None:
        """Locks and workers: new at start and in a forked child (threads don't survive fork)."""
        self._decide_lock = threading.Lock()
        self._wake = threading.Condition()
        self._workers: dict[str, threading.Thread] = {}
        self._stopping = False
        self._overflow_logged = False

    def _after_fork(self) -> None:
        self.outbox.reopen()
        self._init_threading()

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
        """The time a decision is made at: span time, bounded by the receive time, or by the
        replay's bounds when replaying (cooldowns and the hourly limit only ever see times a wrong
        clock can't push to 2100 or 1970, where they would silence what follows)."""
        if self._replay and self._replay_bounds is not None:
            low, high = self._replay_bounds
            return min(max(span_time_ns or low, low), high)
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
        """Decide now, keep each alert in the outbox, deliver on the sinks' workers. Never blocks
        on a sink; beyond the byte bound, an alert is dropped and counted."""
        queued = False
        for finding in findings:
            alert = self.decide(finding)
            if alert is None:
                continue
            if not self.sinks:
                self.stats.sent += 1
                continue
            alert.key = self._key(finding)
            destinations = [_destination(sink) for sink in self.sinks]
            added = self.outbox.put(destinations, alert.key, alert.to_record())
            if added is False:
                self.stats.dropped_queue_full += 1
                if not self._overflow_logged:
                    self._overflow_logged = True
                    logger.warning(
                        "otel-perf: alert outbox full (OTEL_PERF_ALERTS_MAX_PENDING_BYTES); dropping new "
                        "alerts until sinks catch up (counted), e.g. %s",
                        finding.alert_name,
                    )
                continue
            if added:
                self.stats.sent += 1
                queued = True
        if queued:
            self._ensure_workers()
            with self._wake:
                self._wake.notify_all()

    def _key(self, finding: Finding) -> str:
        """What makes two deliveries the same alert: the fingerprint and the cooldown window it
        fired in (a restart re-raising it in the same window sends nothing new), and resolution."""
        window = int(self._routing_time(finding.time_ns) // max(1.0, self.settings.cooldown_s * 1e9))
        return f"{finding.fingerprint}:{window}:{finding.details.get('status', '')}"

    def deliver(self, alert: Alert) -> None:
        """Hand one alert to every sink now, containing each sink's failure (no outbox, no retry)."""
        for sink in self.sinks:
            self._send(sink, alert)

    def _send(self, sink: Sink, alert: Alert) -> bool:
        try:
            sink.send(alert)
            return True
        except Exception as error:
            failures = self.stats.sink_failures
            failures[sink.name] = failures.get(sink.name, 0) + 1
            if failures[sink.name] in (1, 10, 100) or failures[sink.name] % 1000 == 0:
                logger.warning(
                    "otel-perf: %s sink failed (%d so far; retried with backoff): %s",
                    sink.name,
                    failures[sink.name],
                    error,
                )
            return False

    def _ensure_workers(self) -> None:
        """One worker per sink (by destination: two channels of one kind are two workers), started
        lazily (a pre-fork master never starts one)."""
        with self._wake:
            for sink in self.sinks:
                worker = self._workers.get(_destination(sink))
                if worker is None or not worker.is_alive():
                    worker = threading.Thread(
                        target=self._run, args=(sink,), name=f"otel-perf-alerts-{sink.name}", daemon=True
                    )
                    self._workers[_destination(sink)] = worker
                    worker.start()

    def _run(self, sink: Sink) -> None:
        while not self._stopping:
            try:
                claimed = self.outbox.claim(_destination(sink), _LEASE_S)
            except Exception:  # a broken state file: logged, retried, never into the app
                logger.exception("otel-perf: reading the alert outbox failed")
                claimed = []
            for row_id, record, attempts in claimed:
                if self._send(sink, Alert.from_record(record)):
                    self.outbox.delivered(row_id)
                elif not self.outbox.failed(row_id, attempts):
                    logger.warning(
                        "otel-perf: gave up delivering %s to %s after %.0f s",
                        record.get("title", "an alert"),
                        sink.name,
                        self.settings.retry_for_s,
                    )
            if claimed:
                continue
            due = self.outbox.next_due(_destination(sink))
            wait = _IDLE_WAIT_S if due is None else min(_IDLE_WAIT_S, max(0.01, due - time.time()))
            with self._wake:
                if not self._stopping:
                    self._wake.wait(wait)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every alert had its first delivery attempt at every sink (True) or the
        timeout passed (False); failed ones stay in the outbox, retried."""
        deadline = time.monotonic() + timeout_s
        mine = [_destination(sink) for sink in self.sinks]
        if self.outbox.undelivered(mine, first_attempt_only=True):
            self._ensure_workers()
        while self.outbox.undelivered(mine, first_attempt_only=True):
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
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for worker in list(self._workers.values()):
            worker.join(timeout=1)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.debug("otel-perf: closing %s failed", sink.name, exc_info=True)
        # A worker still in a delivery (a hung webhook) keeps the outbox: closed under it, its next
        # step would raise in its thread; what it holds is delivered by the next process instead.
        if not any(worker.is_alive() for worker in self._workers.values()):
            self.outbox.close()
