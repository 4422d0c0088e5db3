"""The shape every monitor has: settings in, one series' closed windows in, findings out.

Where a detector reads one trace, a monitor reads one series (service, operation) over time. It is
pure like a detector (no I/O, no clock: time comes from the windows, which come from span
timestamps); what it must remember between windows (an open regression) goes in and out as
`state`, a JSON-able dict the watcher keeps (in SQLite, so it survives restarts).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, ClassVar, Protocol

from otel_perf.processors.findings import FIRING, RESOLVED, Finding, Severity
from otel_perf.processors.monitors.windows import SeriesKey, Window

State = dict[str, Any]

__all__ = ["FIRING", "RESOLVED", "Monitor", "State", "iso", "newest_version", "resolution", "series_finding"]


class Monitor(Protocol):
    """Evaluates a series each time one of its windows closes."""

    name: ClassVar[str]
    kind: ClassVar[str]  # the series it reads (`windows.REQUESTS`, `windows.RESOURCE`)

    def __init__(self, settings: Any, window_s: float) -> None: ...

    def evaluate(
        self, key: SeriesKey, history: Sequence[Window], state: State | None
    ) -> tuple[list[Finding], State | None]:
        """Findings for the newest window (`history[-1]`) given the ones before it (oldest first),
        and the state to keep for next time (None: nothing open)."""
        ...


def iso(time_ns: int) -> str:
    return (
        datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


def newest_version(windows: Sequence[Window], among: Sequence[str]) -> str | None:
    """Of the versions `among`, the one whose first window is the latest (the one being rolled out)."""
    first_seen: dict[str, int] = {}
    for window in windows:
        for name in window.versions:
            first_seen.setdefault(name, window.start_ns)
    candidates = [name for name in among if name]
    return max(candidates, key=lambda name: first_seen.get(name, 0)) if candidates else None


def series_finding(
    monitor_type: str,
    key: SeriesKey,
    newest: Window,
    *,
    severity: Severity,
    title: str,
    fingerprint: str,
    details: dict[str, Any],
    summary: str,
) -> Finding:
    """A monitor's finding about a series, dated by the window that was judged."""
    return Finding(
        type=monitor_type,
        severity=severity,
        service=key.service,
        operation=key.operation,
        title=title,
        fingerprint=fingerprint,
        details=details,
        time_ns=newest.end_ns,
        summary=summary,
    )


def resolution(
    monitor_type: str,
    key: SeriesKey,
    newest: Window,
    state: State,
    *,
    title: str,
    details: dict[str, Any],
    summary: str,
) -> Finding:
    """The end of what `state` says fired: same fingerprint, `status` resolved."""
    return series_finding(
        monitor_type,
        key,
        newest,
        severity=Severity.LOW,
        title=title,
        fingerprint=state["fingerprint"],
        details={**details, "status": RESOLVED},
        summary=summary,
    )
