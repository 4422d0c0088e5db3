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

Attribution: when the version serving the newest windows arrived near the change (the change point
lands a few windows after a release, or just before it when it came mid-window), and served less
than 5 % of the requests before it arrived, that version is named. While two versions serve side by
side (a canary), they are compared directly, window by window (the same traffic, so no seasonality
to remove), and the blend's step is not judged.

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
from otel_perf.processors.findings import Finding, fingerprint, severity_by_thresholds
from otel_perf.processors.monitors.base import FIRING, State, iso, newest_version, resolution, series_finding
from otel_perf.processors.monitors.stats import median, one_sample_t, t_tail, welch_t
from otel_perf.processors.monitors.windows import REQUESTS, SeriesKey, Tally, Window

TYPE = "trend_degradation"
_MAX_DAYS_BACK = 7
_MAX_WEEKS_BACK = 4
_MIN_COMPARED = 3  # residuals before a change, at least, for the t-test
_MIN_TAIL = 2.5  # requests above the compared quantile, at least, in a window compared


class TrendSettings(Section):
    """`OTEL_PERF_TREND_*`: when a latency change becomes a `trend_degradation` alert."""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_TREND_")
    ascending: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("min_reference_windows", "reference_windows"),
        ("min_windows_after", "search_windows"),
    )

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
    min_requests: int = Field(
        30,
        ge=1,
        description="Windows with fewer requests are not compared (nor with fewer than 2.5 above the "
        "quantile: 50 for p95, 250 for p99; a p95 of 30 requests is their second slowest).",
    )
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
        # A quantile is only as steady as the requests above it.
        quantile = self.settings.quantile
        self._min_requests = max(self.settings.min_requests, math.ceil(_MIN_TAIL / (1 - quantile) - 1e-9))
        self._season = season_windows if season_windows >= 2 else 0
        self._version_floor = max(1, self._min_requests // 2)  # requests of one version in a window

    def evaluate(
        self, key: SeriesKey, history: Sequence[Window], state: State | None
    ) -> tuple[list[Finding], State | None]:
        config = self.settings
        valid = [window for window in history if window.count >= self._min_requests]
        if not valid or valid[-1] is not history[-1]:
            return [], state  # the newest window is too quiet to say anything
        levels = [math.log(max(window.total.quantile(config.quantile), 1e-3)) for window in valid]
        if state is not None and state.get("status") == FIRING:
            return self._check_resolved(key, valid, state)
        serving = self._side_by_side(valid)
        if len(serving) >= 2:
            # A canary: the versions' direct comparison decides, not the blend's step (a slow
            # canary on 10 % of the traffic lifts the blended p95 before it is significant itself).
            return self._canary(key, valid, serving) or ([], None)
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
        # In the test only: a quiet window's quantile is noisier, so its residual weighs less.
        counts = [valid[index].count for index, _ in known]
        typical = median(counts)
        weighed = [r * math.sqrt(n / typical) for r, n in zip(values, counts, strict=True)]
        best: tuple[float, int, float] | None = None  # (p, split, t)
        # Residuals exist only where `min_reference_windows` came before: a few of them suffice.
        lowest_split = max(_MIN_COMPARED, len(values) - config.search_windows)
        for split in range(lowest_split, len(values) - config.min_windows_after + 1):
            after = values[split:]
            if median(after) < threshold:
                continue
            # The after group's spread is floored at the before group's: three windows that happen
            # to agree are not evidence (with 24 candidate splits re-tested every window).
            t, df = welch_t(
                weighed[split:],
                weighed[max(0, split - config.reference_windows) : split],
                floor_after_variance=True,
            )
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
        if current_ms - baseline_ms < config.min_delta_ms or current_ms < baseline_ms * (
            1 + config.min_increase
        ):
            return [], None  # what is reported must pass the gates too
        before_windows = [
            valid[index] for index, _ in known[max(0, split - config.reference_windows) : split]
        ]
        change_at = after_windows[0].start_ns
        version, version_start = self._attribute(history, before_windows, after_windows)
        if version_start is not None:
            change_at = version_start
        return self._fire(
            key,
            history[-1],
            baseline_ms=baseline_ms,
            current_ms=current_ms,
            change_at=change_at,
            version=version,
            windows_after=len(after_windows),
            p_value=p,
        )

    def _attribute(
        self, history: Sequence[Window], before: Sequence[Window], after: Sequence[Window]
    ) -> tuple[str | None, int | None]:
        """(the version that arrived with the change, the start of its first window), or (None, None)."""
        after_counts: dict[str, int] = {}
        for window in after[-self.settings.min_windows_after :]:  # what serves now
            for name, tally in window.versions.items():
                after_counts[name] = after_counts.get(name, 0) + tally.count
        if not after_counts:
            return None, None
        dominant = max(after_counts, key=lambda name: after_counts[name])
        first = next((window for window in history if dominant in window.versions), None)
        if not dominant or first is None:
            return None, None
        # Its share before the change, counting only windows before it arrived (a split found a few
        # windows after the release must not count the release's own windows against it).
        earlier = [window for window in before if window.start_ns < first.start_ns]
        earlier_total = sum(window.count for window in earlier) or 1
        if sum(w.versions[dominant].count for w in earlier if dominant in w.versions) / earlier_total >= 0.05:
            return None, None  # it served before the change too: not what changed
        # The split lands near the release, rarely on it: up to a search span after, a few before.
        # Counted in windows the series has (a restart's gap is no window).
        start, arrived = after[0].start_ns, first.start_ns
        if start < arrived:
            if (
                sum(start <= window.start_ns < arrived for window in history)
                > self.settings.min_windows_after
            ):
                return None, None
        elif sum(arrived <= window.start_ns < start for window in history) > self.settings.search_windows:
            return None, None
        return dominant, first.start_ns

    # --- canary: two versions side by side ------------------------------------------------------

    def _side_by_side(self, valid: Sequence[Window]) -> set[str]:
        """The named versions serving at least 5 % of the requests in each of the last
        `min_windows_after` windows (a straggler instance serving a handful is not a canary)."""
        recent = valid[-self.settings.min_windows_after :]
        if len(recent) < self.settings.min_windows_after:
            return set()
        shared = set.intersection(
            *(
                {name for name, tally in window.versions.items() if tally.count >= 0.05 * window.count}
                for window in recent
            )
        )
        shared.discard("")
        return shared

    def _canary(
        self, key: SeriesKey, valid: Sequence[Window], shared: set[str]
    ) -> tuple[list[Finding], State | None] | None:
        config = self.settings
        recent = valid[-config.min_windows_after :]
        floor = self._version_floor
        new = newest_version(valid, sorted(shared))
        if new is None:
            return None
        old = max(
            (name for name in shared if name != new),
            key=lambda name: sum(w.versions[name].count for w in recent),
        )
        # One ratio per run of consecutive windows holding `floor` requests of each version (a 10 %
        # canary may need a few windows for one steady p95).
        ratios, new_ms, old_ms = [], [], []
        new_run, old_run = Tally(), Tally()
        for window in valid[-config.search_windows :]:
            new_tally, old_tally = window.versions.get(new), window.versions.get(old)
            if new_tally is None or old_tally is None:
                continue
            new_run.merge(new_tally)
            old_run.merge(old_tally)
            if min(new_run.count, old_run.count) < floor:
                continue
            new_q, old_q = new_run.quantile(config.quantile), old_run.quantile(config.quantile)
            ratios.append(math.log(max(new_q, 1e-3) / max(old_q, 1e-3)))
            new_ms.append(new_q)
            old_ms.append(old_q)
            new_run, old_run = Tally(), Tally()
        if len(ratios) < config.min_windows_after or median(ratios) < math.log1p(config.min_increase):
            return None  # no worse than the version beside it: whatever else changed is a step's to find
        t, df = one_sample_t(ratios)
        p = t_tail(t, df)
        current_ms, baseline_ms = median(new_ms), median(old_ms)
        if p > config.significance or current_ms - baseline_ms < config.min_delta_ms:
            return None
        first_new = next(window.start_ns for window in valid if new in window.versions)
        return self._fire(
            key,
            valid[-1],
            baseline_ms=baseline_ms,
            current_ms=current_ms,
            change_at=first_new,
            version=new,
            windows_after=len(ratios),
            p_value=p,
            baseline_version=old,
        )

    # --- alerts ---------------------------------------------------------------------------------

    def _fire(
        self,
        key: SeriesKey,
        newest: Window,
        *,
        baseline_ms: float,
        current_ms: float,
        change_at: int,
        version: str | None,
        windows_after: int,
        p_value: float,
        baseline_version: str | None = None,
    ) -> tuple[list[Finding], State]:
        """The alert of a regression (a canary's when `baseline_version`), and the state that keeps
        it open until it resolves."""
        details: dict[str, object] = {
            "baseline_ms": round(baseline_ms, 1),
            "current_ms": round(current_ms, 1),
            "change_at": iso(change_at),
            "version": version,
            "quantile": _quantile_name(self.settings.quantile),
            "increase_pct": round((current_ms / baseline_ms - 1) * 100, 1),
            "windows_after": windows_after,
            "p_value": float(f"{p_value:.3g}"),
            "window_s": self.window_ns / 1e9,
            "canary": baseline_version is not None,
            "status": FIRING,
        }
        if baseline_version is not None:
            details["baseline_version"] = baseline_version
        finding = series_finding(
            TYPE,
            key,
            newest,
            severity=severity_by_thresholds(current_ms / max(baseline_ms, 1e-3), 1.0, 1.5, 2.0),
            title=f"{key.operation} got slower: {self._describe(details)}",
            fingerprint=fingerprint(TYPE, key.service, key.operation, version or details["change_at"]),
            details=details,
            summary=f"{details['quantile']} latency regression",
        )
        return [finding], {"status": FIRING, "fingerprint": finding.fingerprint, "details": details}

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
        details = {**fired, "current_ms": round(current_ms, 1)}
        finding = resolution(
            TYPE,
            key,
            valid[-1],
            state,
            title=f"{key.operation} is back to {details['quantile']} {details['current_ms']} ms (resolved)",
            details=details,
            summary=f"{details['quantile']} latency regression",
        )
        return [finding], None


def _quantile_name(quantile: float) -> str:
    return f"p{quantile * 100:g}"
