"""Latency trend degradation: an operation got slower than it used to be, and which release did it.

Per closed window: the chosen quantile (p95) of the operation's durations, as a log level. Each
window is compared like with like: with the same slot of previous weeks (once two weeks exist),
else of previous days (hour of day); nothing is judged before a day of history exists (a busy
afternoon on the first day is not a regression). With no season (`season_s` 0, or windows of a day
or more), with the median of the windows before it. The residuals (level minus what was expected)
go to a change-point search over the recent windows: for each candidate split, Welch's t-test of
"after" against "before"; the best split must then pass every gate: the median rise at least
`min_increase`, the last `min_windows_after` windows still up (a one-window spike is not a trend),
at least `min_delta_ms` in absolute terms, significance below `significance`, and every window
compared having `min_requests`. A slow compounding drift passes the same gates once it has added
up.

Attribution: when the version serving most requests after the change first appeared within a window
of it, that version is named. While two versions serve side by side (a canary), they are compared
directly, window by window (the same traffic, so no seasonality to remove).

One regression, one alert (its fingerprint carries the change window); it resolves when the
quantile is back within half the threshold of the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors.config import Section
from otel_perf.processors.findings import Finding, Severity, fingerprint, severity_by_thresholds
from otel_perf.processors.monitors.base import FIRING, RESOLVED, State, iso, newest_version
from otel_perf.processors.monitors.stats import median, one_sample_t, t_tail, welch_t
from otel_perf.processors.monitors.windows import REQUESTS, SeriesKey, Window

TYPE = "trend_degradation"
_MAX_DAYS_BACK = 7
_MAX_WEEKS_BACK = 4
_MIN_COMPARED = 3  # residuals before a change, at least, for the t-test


class TrendSettings(Section):
    """`OTEL_PERF_TREND_*`: when a latency change becomes a `trend_degradation` alert."""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_TREND_")

    enabled: bool = Field(True, description="Watch each operation's latency over time.")
    quantile: float = Field(0.95, gt=0, lt=1, description="The latency quantile compared (0.95: p95).")
    min_increase: float = Field(
        0.2, gt=0, description="Alert when the quantile rose by at least this fraction (0.2: +20 %)."
    )
    min_delta_ms: float = Field(10, ge=0, description="…and by at least this many milliseconds.")
    min_windows_after: int = Field(
        3, ge=1, description="Windows the new level must hold before it is a trend (a spike is not)."
    )
    search_windows: int = Field(24, ge=1, description="How far back (windows) a change is searched for.")
    reference_windows: int = Field(
        48, ge=2, description="Windows before a candidate change that it is compared against."
    )
    min_reference_windows: int = Field(
        8, ge=2, description="No verdict before this many compared windows exist before the change."
    )
    min_requests: int = Field(30, ge=1, description="Windows with fewer requests are not compared.")
    significance: float = Field(
        0.005, gt=0, lt=1, description="Welch's t-test p-value a change must beat (one-sided)."
    )
    season_s: float = Field(
        86400,
        ge=0,
        description="Compare like with like: the same slot of this period (a day; then 7 of them, a "
        "week, once two exist) before the previous windows. 0: no seasonality.",
    )


class TrendMonitor:
    name: ClassVar[str] = TYPE
    kind: ClassVar[str] = REQUESTS

    def __init__(self, settings: TrendSettings | None = None, window_s: float = 3600) -> None:
        self.settings = settings or TrendSettings()
        self.window_ns = int(window_s * 1e9)
        season_windows = round(self.settings.season_s / window_s) if self.settings.season_s else 0
        self._season = season_windows if season_windows >= 2 else 0

    def evaluate(
        self, key: SeriesKey, history: Sequence[Window], state: State | None
    ) -> tuple[list[Finding], State | None]:
        config = self.settings
        valid = [window for window in history if window.count >= config.min_requests]
        if not valid or valid[-1] is not history[-1]:
            return [], state  # the newest window is too quiet to say anything
        levels = [math.log(max(window.total.quantile(config.quantile), 1e-3)) for window in valid]
        if state is not None and state.get("status") == FIRING:
            return self._check_resolved(key, valid, state)
        canary = self._canary(key, valid)
        if canary is not None:
            return canary
        return self._detect_step(key, valid, levels, history)

    # --- like with like -------------------------------------------------------------------------

    def _residuals(self, valid: Sequence[Window], levels: Sequence[float], first: int) -> list[float | None]:
        """Level minus expected for windows `first`… (None where nothing comparable came before)."""
        slot_of = {window.start_ns // self.window_ns: index for index, window in enumerate(valid)}
        residuals: list[float | None] = []
        for index in range(first, len(valid)):
            expected = self._expected(valid, levels, slot_of, index)
            residuals.append(None if expected is None else levels[index] - expected)
        return residuals

    def _expected(
        self, valid: Sequence[Window], levels: Sequence[float], slot_of: dict[int, int], index: int
    ) -> float | None:
        season = self._season
        if season:
            slot = valid[index].start_ns // self.window_ns
            for period, back in ((7 * season, _MAX_WEEKS_BACK), (season, _MAX_DAYS_BACK)):
                same = [levels[slot_of[s]] for k in range(1, back + 1) if (s := slot - k * period) in slot_of]
                if len(same) >= (2 if period != season else 1):
                    return median(same)
            # No fallback to the windows just before: on the first day, a busy afternoon would look
            # like a regression. Nothing is judged until a season of history exists.
            return None
        before = levels[max(0, index - self.settings.reference_windows) : index]
        return median(before) if len(before) >= self.settings.min_reference_windows else None

    # --- a step or a drift ----------------------------------------------------------------------

    def _detect_step(
        self, key: SeriesKey, valid: Sequence[Window], levels: Sequence[float], history: Sequence[Window]
    ) -> tuple[list[Finding], State | None]:
        config = self.settings
        threshold = math.log1p(config.min_increase)
        first = max(0, len(valid) - config.search_windows - config.reference_windows)
        residuals = self._residuals(valid, levels, first)
        known = [(first + offset, r) for offset, r in enumerate(residuals) if r is not None]
        if len(known) < _MIN_COMPARED + config.min_windows_after:
            return [], None
        tail = [r for _, r in known[-config.min_windows_after :]]
        if median(tail) < threshold:
            return [], None  # the newest windows are not up: nothing to report (cheap exit)
        values = [r for _, r in known]
        best: tuple[float, int, float] | None = None  # (p, split, t)
        # Residuals exist only where `min_reference_windows` came before: a few of them suffice.
        lowest_split = max(_MIN_COMPARED, len(values) - config.search_windows)
        for split in range(lowest_split, len(values) - config.min_windows_after + 1):
            after = values[split:]
            if median(after) < threshold:
                continue
            t, df = welch_t(after, values[max(0, split - config.reference_windows) : split])
            p = t_tail(t, df)
            if best is None or p < best[0]:
                best = (p, split, t)
        if best is None or best[0] > config.significance:
            return [], None
        p, split, _ = best
        after_windows = [valid[index] for index, _ in known[split:]]
        after_levels = [levels[index] for index, _ in known[split:]]
        expected_levels = [level - r for level, (_, r) in zip(after_levels, known[split:], strict=True)]
        current_ms = math.exp(median(after_levels))
        baseline_ms = math.exp(median(expected_levels))
        if current_ms - baseline_ms < config.min_delta_ms:
            return [], None
        before_windows = [
            valid[index] for index, _ in known[max(0, split - config.reference_windows) : split]
        ]
        change_at = after_windows[0].start_ns
        version, version_start = self._attribute(history, before_windows, after_windows)
        if version_start is not None:
            change_at = version_start
        details = {
            "baseline_ms": round(baseline_ms, 1),
            "current_ms": round(current_ms, 1),
            "change_at": iso(change_at),
            "version": version,
            "quantile": _quantile_name(config.quantile),
            "increase_pct": round((current_ms / baseline_ms - 1) * 100, 1),
            "windows_after": len(after_windows),
            "p_value": float(f"{p:.3g}"),
            "window_s": self.window_ns / 1e9,
            "canary": False,
            "status": FIRING,
        }
        return self._fire(key, history[-1], details)

    def _attribute(
        self, history: Sequence[Window], before: Sequence[Window], after: Sequence[Window]
    ) -> tuple[str | None, int | None]:
        """(the version that arrived with the change, the start of its first window), or (None, None)."""
        after_counts: dict[str, int] = {}
        for window in after:
            for name, tally in window.versions.items():
                after_counts[name] = after_counts.get(name, 0) + tally.count
        if not after_counts:
            return None, None
        dominant = max(after_counts, key=lambda name: after_counts[name])
        before_total = sum(window.count for window in before) or 1
        before_share = (
            sum(w.versions[dominant].count for w in before if dominant in w.versions) / before_total
        )
        if not dominant or before_share >= 0.05:
            return None, None  # it served before the change too: not what changed
        first = next((window for window in history if dominant in window.versions), None)
        if first is None or abs(first.start_ns - after[0].start_ns) > self.window_ns:
            return None, None
        return dominant, first.start_ns

    # --- canary: two versions side by side ------------------------------------------------------

    def _canary(self, key: SeriesKey, valid: Sequence[Window]) -> tuple[list[Finding], State | None] | None:
        config = self.settings
        recent = valid[-config.min_windows_after :]
        floor = max(1, config.min_requests // 2)
        shared = set.intersection(
            *({name for name, tally in window.versions.items() if tally.count >= floor} for window in recent)
        )
        shared.discard("")
        if len(recent) < config.min_windows_after or len(shared) < 2:
            return None
        new = newest_version(valid, sorted(shared))
        if new is None:
            return None
        old = max(
            (name for name in shared if name != new),
            key=lambda name: sum(w.versions[name].count for w in recent),
        )
        ratios, new_ms, old_ms = [], [], []
        for window in valid[-config.search_windows :]:
            new_tally, old_tally = window.versions.get(new), window.versions.get(old)
            if new_tally is None or old_tally is None or min(new_tally.count, old_tally.count) < floor:
                continue
            new_q, old_q = new_tally.quantile(config.quantile), old_tally.quantile(config.quantile)
            ratios.append(math.log(max(new_q, 1e-3) / max(old_q, 1e-3)))
            new_ms.append(new_q)
            old_ms.append(old_q)
        if len(ratios) < config.min_windows_after or median(ratios) < math.log1p(config.min_increase):
            return None  # no worse than the version beside it: whatever else changed is a step's to find
        t, df = one_sample_t(ratios)
        p = t_tail(t, df)
        current_ms, baseline_ms = median(new_ms), median(old_ms)
        if p > config.significance or current_ms - baseline_ms < config.min_delta_ms:
            return None
        first_new = next(window.start_ns for window in valid if new in window.versions)
        details = {
            "baseline_ms": round(baseline_ms, 1),
            "current_ms": round(current_ms, 1),
            "change_at": iso(first_new),
            "version": new,
            "baseline_version": old,
            "quantile": _quantile_name(config.quantile),
            "increase_pct": round((current_ms / baseline_ms - 1) * 100, 1),
            "windows_after": len(ratios),
            "p_value": float(f"{p:.3g}"),
            "window_s": self.window_ns / 1e9,
            "canary": True,
            "status": FIRING,
        }
        return self._fire(key, valid[-1], details)

    # --- alerts ---------------------------------------------------------------------------------

    def _fire(
        self, key: SeriesKey, newest: Window, details: dict[str, object]
    ) -> tuple[list[Finding], State]:
        ratio = float(details["current_ms"]) / max(float(details["baseline_ms"]), 1e-3)  # type: ignore[arg-type]
        finding = Finding(
            type=TYPE,
            severity=severity_by_thresholds(ratio, 1.0, 1.5, 2.0),
            service=key.service,
            operation=key.operation,
            title=f"{key.operation} got slower: {self._describe(details)}",
            fingerprint=fingerprint(
                TYPE, key.service, key.operation, details["version"] or details["change_at"]
            ),
            details=details,
            time_ns=newest.end_ns,
            summary=f"{details['quantile']} latency regression",
        )
        state = {"status": FIRING, "fingerprint": finding.fingerprint, "details": details}
        return [finding], state

    @staticmethod
    def _describe(details: dict[str, object]) -> str:
        since = (
            f"since version {details['version']}" if details["version"] else f"since {details['change_at']}"
        )
        where = f" (canary beside {details['baseline_version']})" if details.get("canary") else ""
        return (
            f"{details['quantile']} {details['baseline_ms']} ms → {details['current_ms']} ms "
            f"(+{details['increase_pct']} %) {since}{where}"
        )

    def _check_resolved(
        self, key: SeriesKey, valid: Sequence[Window], state: State
    ) -> tuple[list[Finding], State | None]:
        config = self.settings
        fired = dict(state["details"])
        recent = valid[-config.min_windows_after :]
        current_ms = median([window.total.quantile(config.quantile) for window in recent])
        if fired.get("canary"):
            new = fired["version"]
            if any(new in window.versions and len(window.versions) > 1 for window in recent):
                return [], state  # still side by side: the direct comparison stands
        if current_ms > float(fired["baseline_ms"]) * (1 + config.min_increase / 2):
            return [], state
        details = {**fired, "current_ms": round(current_ms, 1), "status": RESOLVED}
        finding = Finding(
            type=TYPE,
            severity=Severity.LOW,
            service=key.service,
            operation=key.operation,
            title=f"{key.operation} is back to {details['quantile']} {details['current_ms']} ms (resolved)",
            fingerprint=state["fingerprint"],
            details=details,
            time_ns=valid[-1].end_ns,
            summary=f"{details['quantile']} latency regression",
        )
        return [finding], None


def _quantile_name(quantile: float) -> str:
    return f"p{quantile * 100:g}"
