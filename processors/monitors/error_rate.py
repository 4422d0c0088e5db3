"""Error rate: the share of an operation's requests that failed (span status ERROR) in a window.

Absolute levels, as the teams' own monitors had them (5 %, critical from 20 %), over a whole window
with a minimum volume, so a handful of requests never alerts. When the failing requests come from
one version while others serve cleanly, that version is named. Resolves when a window's rate falls
below half the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors.config import Section
from otel_perf.processors.findings import Finding, Severity, fingerprint
from otel_perf.processors.monitors.base import FIRING, State, iso, resolution, series_finding
from otel_perf.processors.monitors.windows import REQUESTS, SeriesKey, Window

TYPE = "error_rate"


class ErrorRateSettings(Section):
    """`OTEL_PERF_ERROR_RATE_*`: when failing requests become an `error_rate` alert."""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_ERROR_RATE_")
    ascending: ClassVar[tuple[tuple[str, ...], ...]] = (("threshold", "critical"),)

    enabled: bool = Field(True, description="Watch each operation's error rate per window.")
    threshold: float = Field(0.05, gt=0, le=1, description="Alert (high) when this share of requests failed.")
    critical: float = Field(0.20, gt=0, le=1, description="…critical from this share.")
    min_requests: int = Field(20, ge=1, description="Windows with fewer requests are not judged.")
    min_errors: int = Field(
        5, ge=1, description="…nor windows with fewer failed requests (3 of 60 is bad luck, not a trend)."
    )
    windows_to_resolve: int = Field(
        2, ge=1, description="Resolved once this many windows in a row stay under half the threshold."
    )


class ErrorRateMonitor:
    name: ClassVar[str] = TYPE
    kind: ClassVar[str] = REQUESTS

    def __init__(self, settings: ErrorRateSettings | None = None, window_s: float = 3600) -> None:
        self.settings = settings or ErrorRateSettings()
        self.window_s = window_s

    def evaluate(
        self, key: SeriesKey, history: Sequence[Window], state: State | None
    ) -> tuple[list[Finding], State | None]:
        config = self.settings
        window = history[-1]
        if window.count < config.min_requests:
            return [], state
        rate = window.total.error_rate
        details: dict[str, object] = {
            "error_rate": round(rate, 4),
            "errors": window.total.errors,
            "requests": window.count,
            "window_start": iso(window.start_ns),
            "window_s": self.window_s,
        }
        if state is not None and state.get("status") == FIRING:
            recent = [
                each for each in history[-config.windows_to_resolve :] if each.count >= config.min_requests
            ]
            if len(recent) < config.windows_to_resolve or any(
                each.total.error_rate >= config.threshold / 2 for each in recent
            ):
                return [], state
            resolved = resolution(
                TYPE,
                key,
                window,
                state,
                title=f"{key.operation}: errors back to {rate:.1%} (resolved)",
                details={**details, "version": state.get("version")},
                summary="error rate",
            )
            return [resolved], None
        if rate < config.threshold or window.total.errors < config.min_errors:
            return [], None
        version = self._failing_version(window) or self._released_version(history)
        details.update({"version": version, "status": FIRING})
        severity = Severity.CRITICAL if rate >= config.critical else Severity.HIGH
        where = f" (version {version})" if version else ""
        finding = series_finding(
            TYPE,
            key,
            window,
            severity=severity,
            title=f"{key.operation}: {rate:.1%} of {window.count} requests failed{where}",
            fingerprint=fingerprint(TYPE, key.service, key.operation, version or iso(window.start_ns)),
            details=details,
            summary="error rate",
        )
        return [finding], {"status": FIRING, "fingerprint": finding.fingerprint, "version": version}

    def _released_version(self, history: Sequence[Window]) -> str | None:
        """The version now serving, when it arrived recently and the errors came with it."""
        version = history[-1].dominant_version()
        if version is None:
            return None
        first = next(index for index, each in enumerate(history) if version in each.versions)
        before = history[max(0, first - 24) : first]
        requests = sum(each.count for each in before)
        errors = sum(each.total.errors for each in before)
        if first < len(history) - 24 or requests < self.settings.min_requests:
            return None
        return version if errors / requests < self.settings.threshold / 2 else None

    def _failing_version(self, window: Window) -> str | None:
        """The version whose requests fail while the others' don't (None: all alike, or only one)."""
        named = {name: tally for name, tally in window.versions.items() if name}
        if len(named) < 2:
            return None
        threshold = self.settings.threshold
        failing = [name for name, tally in named.items() if tally.error_rate >= threshold]
        healthy = [name for name, tally in named.items() if tally.error_rate < threshold / 2]
        return failing[0] if len(failing) == 1 and healthy else None
