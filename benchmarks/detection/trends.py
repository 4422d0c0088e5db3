"""Detection quality of the latency trend monitor: how often it alerts on nothing, how surely and how
fast it finds a real slowdown, and whether it names the release that caused it.

Labelled synthetic series, one window per hour: request durations (lognormal, median ~80 ms, sigma 0.5)
go into the monitors' own `Aggregate` per window, with per-request `service.version` labels. Every
series has 14 days of warm-up history, then 4-7 days over which `TrendMonitor.evaluate` runs window
by window as the watcher runs it (all windows so far, oldest first; the state it returns kept).
Cases: no change (flat, daily and weekly seasons, low volume, a release or a canary at the same
latency), steps of +20 … +100 % with and without a release, compounding drifts, one-window spikes,
and a slower canary. Targets (from the issue): ≤ 1 % of no-change series alerted; +30 % steps (and
larger) found ≥ 95 % within 6 windows; spikes never reported; the release named whenever a step
comes with one. A full run exits non-zero when one is missed.

    python -m benchmarks.detection.trends [--quick] [--seed 1] [--jobs N] [--series N]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from benchmarks.common import machine
from otel_perf.processors.monitors.base import FIRING, State
from otel_perf.processors.monitors.trend import TrendMonitor, TrendSettings
from otel_perf.processors.monitors.windows import Aggregate, SeriesKey, Window

WINDOW_S = 3600  # the watcher's default window; TrendSettings' season (a day) is 24 of them
WINDOW_NS = WINDOW_S * 10**9
DAY = 24  # windows
WARM_UP = 14 * DAY  # two weeks: the monitor compares with the same hour of previous weeks from then
SPAN = (4 * DAY, 7 * DAY)  # evaluated windows after the warm-up
ROOM_AFTER = 36  # windows left after a change (a drift needs a while to add up)
MONDAY_NS = int(datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp()) * 10**9
MEDIAN_MS, SIGMA = 80.0, 0.5
REQUESTS = 200  # per window on average (seasonal series: more by day, fewer at night and weekends)
OLD, NEW = "1.4.0", "1.5.0"

MAX_FALSE_ALERTS = 0.01  # share of no-change series with any alert
MIN_FOUND = 0.95  # share of +30 % (and larger) steps found within MAX_DELAY windows
MAX_DELAY = 6  # windows from the change's window to the alert's
TARGET_STEP = 0.3

Kind = Literal["none", "step", "drift", "spike"]
Rollout = Literal["", "release", "canary"]


@dataclass(frozen=True)
class Case:
    """One labelled scenario. `size`: a step's (or canary's) latency factor - 1, a drift's per window.
    `rollout`: a new version serving everything from the change on ("release") or a share beside
    the old one ("canary"); with a step only its requests are slower, without one all are."""

    name: str
    kind: Kind
    series: int
    quick: int  # series in --quick (0: left out)
    size: float = 0.0
    rollout: Rollout = ""
    daily: bool = False
    weekly: bool = False
    low_volume: bool = False  # 10-40 requests per window: below min_requests (30) part of the time

    @property
    def change(self) -> bool:
        """Whether the series has a labelled change time (a regression, or a rollout without one)."""
        return self.kind in ("step", "drift") or bool(self.rollout)

    @property
    def regression(self) -> bool:
        return self.kind in ("step", "drift") and self.size > 0


CASES: tuple[Case, ...] = (
    Case("no change, flat", "none", 200, 6),
    Case("no change, daily season", "none", 200, 5, daily=True),
    Case("no change, daily + weekly season", "none", 200, 5, daily=True, weekly=True),
    Case("no change, low volume (10–40/window)", "none", 200, 6, low_volume=True),
    Case("no change, new version", "none", 200, 3, rollout="release"),
    Case("no change, canary (10–20 %)", "none", 200, 3, rollout="canary"),
    Case("step +20 %", "step", 100, 0, 0.2),
    Case("step +30 %", "step", 100, 5, 0.3),
    Case("step +50 %", "step", 100, 2, 0.5),
    Case("step +100 %", "step", 100, 2, 1.0),
    Case("step +20 %, new version", "step", 100, 0, 0.2, rollout="release"),
    Case("step +30 %, new version", "step", 100, 5, 0.3, rollout="release"),
    Case("step +50 %, new version", "step", 100, 2, 0.5, rollout="release"),
    Case("step +100 %, new version", "step", 100, 2, 1.0, rollout="release"),
    Case("step +30 %, daily + weekly season", "step", 100, 3, 0.3, daily=True, weekly=True),
    Case("step +30 %, low volume", "step", 100, 0, 0.3, low_volume=True),
    Case("drift +2 %/window", "drift", 100, 0, 0.02),
    Case("drift +3 %/window", "drift", 100, 2, 0.03),
    Case("spikes +100–300 %, 1 window", "spike", 100, 5),
    Case("canary (10–20 %) +50 %", "step", 100, 4, 0.5, rollout="canary"),
)


# --- the series -----------------------------------------------------------------------------------


class Series:
    """One labelled series: its random draws (all from `rng`, so a seed gives the same series) and
    the windows they make, built on demand."""

    def __init__(self, case: Case, rng: random.Random) -> None:
        self.case, self.rng = case, rng
        self.start_ns = MONDAY_NS + rng.randrange(7 * DAY) * WINDOW_NS  # any weekday, any hour
        self.length = WARM_UP + rng.randint(*SPAN)
        self.median_ms = MEDIAN_MS * rng.uniform(0.8, 1.25)
        self.amplitude = rng.uniform(0.3, 0.4)
        self.business_hours = rng.random() < 0.5  # else a sine with a random phase
        self.phase = rng.uniform(0, 24)
        self.weekend = rng.uniform(0.7, 0.85)  # weekend latency factor
        self.change: int | None = None
        self.split = rng.random()  # where in its window the change begins
        self.canary_share = rng.uniform(0.10, 0.20)
        if case.change:
            self.change = rng.randint(WARM_UP + 6, self.length - ROOM_AFTER)
        self.spikes: dict[int, float] = {}
        if case.kind == "spike":  # one in each half of the evaluated windows
            middle = (WARM_UP + self.length) // 2
            for low, high in ((WARM_UP, middle - 1), (middle, self.length - 1)):
                self.spikes[rng.randint(low, high)] = 1 + rng.uniform(1.0, 3.0)

    def _season(self, start_ns: int) -> tuple[float, float]:
        """(latency factor, traffic factor) of the window starting at `start_ns`."""
        latency = traffic = 1.0
        if self.case.daily:
            hour = (start_ns // WINDOW_NS) % DAY
            if self.business_hours:
                shape = 2 * math.exp(-(((hour - 14) / 3.5) ** 2)) - 1
            else:
                shape = math.sin(2 * math.pi * (hour - self.phase) / DAY)
            latency *= 1 + self.amplitude * shape
            traffic *= 1 + 0.5 * shape
        if self.case.weekly and (start_ns // (DAY * WINDOW_NS) + 3) % 7 >= 5:  # 1970-01-01: Thursday
            latency *= self.weekend
            traffic *= 0.5
        return latency, traffic

    def _changed(self, index: int) -> tuple[float, str, float]:
        """(share of requests changed, their version, their latency factor) in window `index`."""
        case, change = self.case, self.change
        if change is None or index < change or case.kind not in ("step", "none"):
            return 0.0, OLD, 1.0
        share = 1.0 - self.split if index == change else 1.0
        if case.rollout == "canary":
            share *= self.canary_share
        factor = 1.0 + case.size if case.kind == "step" else 1.0
        return share, NEW if case.rollout else OLD, factor

    def window(self, index: int) -> Window:
        rng, case = self.rng, self.case
        start_ns = self.start_ns + index * WINDOW_NS
        latency, traffic = self._season(start_ns)
        base_ms = self.median_ms * latency * self.spikes.get(index, 1.0)
        if case.kind == "drift" and self.change is not None and index >= self.change:
            base_ms *= (1 + case.size) ** (index - self.change + 1)
        if case.low_volume:
            count = rng.randint(10, 40)
        else:
            mean = REQUESTS * traffic
            count = max(1, round(rng.gauss(mean, math.sqrt(mean))))
        share, version, factor = self._changed(index)
        aggregate = Aggregate()
        gauss, uniform = rng.gauss, rng.random
        for _ in range(count):
            duration_ms = base_ms * math.exp(SIGMA * gauss(0.0, 1.0))
            if share and uniform() < share:
                aggregate.add(version, duration_ms * factor, False)
            else:
                aggregate.add(OLD, duration_ms, False)
        return Window(start_ns, start_ns + WINDOW_NS, aggregate.total, aggregate.versions)


# --- running the monitor --------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    window: int
    version: str | None
    canary: bool


@dataclass(frozen=True)
class SeriesResult:
    change: int | None
    spikes: tuple[int, ...]
    alerts: tuple[Alert, ...]


def run_series(case: Case, index: int, seed: int, settings: TrendSettings | None = None) -> SeriesResult:
    """Feed one series to a `TrendMonitor` as the watcher does; evaluation starts after the warm-up.
    A regression's series stops at its first alert after the change (nothing more to learn)."""
    series = Series(case, random.Random(f"{seed}/{case.name}/{index}"))
    monitor = TrendMonitor(settings or TrendSettings(), WINDOW_S)
    key = SeriesKey("shop", f"GET /{case.kind}/{index}")
    history = [series.window(each) for each in range(WARM_UP)]
    state: State | None = None
    alerts: list[Alert] = []
    for each in range(WARM_UP, series.length):
        history.append(series.window(each))
        findings, state = monitor.evaluate(key, history, state)
        alerts.extend(
            Alert(each, finding.details.get("version"), bool(finding.details.get("canary")))
            for finding in findings
            if finding.details.get("status") == FIRING
        )
        if case.regression and series.change is not None and alerts and alerts[-1].window >= series.change:
            break
    return SeriesResult(series.change, tuple(sorted(series.spikes)), tuple(alerts))


def _run_task(task: tuple[Case, int, int, TrendSettings | None]) -> SeriesResult:
    return run_series(*task)


# --- the figures --------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    """One case's figures (shares of its series) and the targets it missed."""

    case: Case
    series: int
    false_alerts: float
    found: float | None = None
    found_in_time: float | None = None
    delays: list[int] = field(default_factory=list)
    right_version: float | None = None
    spikes_reported: float | None = None
    targets: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)


def summarise(case: Case, results: Sequence[SeriesResult], search_windows: int = 24) -> CaseResult:
    """A case's figures. An alert within `search_windows` after a spike counts as the spike reported
    (the monitor looks back that far); every other alert before a change is a false one."""
    false_alerts = found = in_time = named = 0
    delays: list[int] = []
    spikes = reported = 0
    for result in results:
        change = result.change if case.regression else None
        before = [a for a in result.alerts if change is None or a.window < change]
        for spike in result.spikes:
            spikes += 1
            hits = [a for a in before if spike <= a.window < spike + search_windows]
            reported += bool(hits)
            before = [a for a in before if a not in hits]
        false_alerts += bool(before)
        after = [a for a in result.alerts if change is not None and a.window >= change]
        if change is not None and after:
            found += 1
            delays.append(after[0].window - change)
            in_time += delays[-1] <= MAX_DELAY
            named += after[0].version == NEW
    n = len(results) or 1
    summary = CaseResult(case, len(results), false_alerts / n, delays=sorted(delays))
    if case.regression:
        summary.found, summary.found_in_time = found / n, in_time / n
        if case.rollout:
            summary.right_version = named / found if found else None
    if spikes:
        summary.spikes_reported = reported / spikes
    _judge(summary)
    return summary


def _judge(summary: CaseResult) -> None:
    case = summary.case
    if case.kind == "none":
        summary.targets.append(f"false ≤ {_pct(MAX_FALSE_ALERTS, 0)}")
        if summary.false_alerts > MAX_FALSE_ALERTS:
            summary.missed.append(f"false alerts {_pct(summary.false_alerts)}")
    if case.kind == "spike":
        summary.targets.append("spikes 0")
        if summary.spikes_reported:
            summary.missed.append(f"spikes reported {_pct(summary.spikes_reported)}")
    if case.kind == "step" and case.size >= TARGET_STEP and not case.low_volume and case.rollout != "canary":
        summary.targets.append(f"found ≥ {_pct(MIN_FOUND, 0)} in ≤ {MAX_DELAY}")
        if (summary.found_in_time or 0.0) < MIN_FOUND:
            summary.missed.append(f"found within {MAX_DELAY} windows {_pct(summary.found_in_time or 0.0)}")
    if case.regression and case.rollout:
        summary.targets.append("version 100 %")
        if summary.right_version is not None and summary.right_version < 1.0:
            summary.missed.append(f"right version {_pct(summary.right_version)}")


def run(
    cases: Iterable[Case] = CASES,
    *,
    quick: bool = False,
    series: int | None = None,
    seed: int = 1,
    jobs: int = 1,
    settings: TrendSettings | None = None,
) -> list[CaseResult]:
    """Every case's figures. `series` overrides each case's count; `jobs` > 1 runs series in worker
    processes (the figures do not depend on it: each series has its own seed)."""
    chosen = [(case, series or (case.quick if quick else case.series)) for case in cases]
    chosen = [(case, count) for case, count in chosen if count > 0]
    tasks = [(case, index, seed, settings) for case, count in chosen for index in range(count)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(_run_task, tasks, chunksize=4))
    else:
        results = [_run_task(task) for task in tasks]
    search_windows = (settings or TrendSettings()).search_windows
    summaries, offset = [], 0
    for case, count in chosen:
        summaries.append(summarise(case, results[offset : offset + count], search_windows))
        offset += count
    return summaries


def missed(summaries: Iterable[CaseResult]) -> list[str]:
    return [f"{s.case.name}: {miss}" for s in summaries for miss in s.missed]


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def table(summaries: Sequence[CaseResult]) -> str:
    """Markdown, as BENCHMARKS.md quotes it."""
    lines = [
        f"| case | series | false alerts | found | found ≤ {MAX_DELAY} windows | delay median / p90 / max "
        "| right version | spikes reported | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        if s.delays:
            p90 = s.delays[min(len(s.delays) - 1, math.ceil(0.9 * len(s.delays)) - 1)]
            delay = f"{statistics.median(s.delays):g} / {p90} / {s.delays[-1]}"
        else:
            delay = "—"
        met = "—" if not s.targets else ("**no**" if s.missed else "yes")
        lines.append(
            f"| {s.case.name} | {s.series} | {_pct(s.false_alerts)} | {_pct(s.found)} "
            f"| {_pct(s.found_in_time)} | {delay} | {_pct(s.right_version)} | {_pct(s.spikes_reported)} "
            f"| {', '.join(s.targets) or '—'} | {met} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few series per case (< 30 s); no verdict")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--series", type=int, default=None, help="series per case (default: per case)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    summaries = run(quick=args.quick, series=args.series, seed=args.seed, jobs=args.jobs)
    elapsed = time.perf_counter() - started
    print(table(summaries))
    print(
        f"\nseed {args.seed}, {sum(s.series for s in summaries)} series, {elapsed:.0f} s with "
        f"{args.jobs} jobs ({machine()}); {WINDOW_S} s windows, TrendSettings() (the defaults unless "
        "OTEL_PERF_TREND_* is set)"
    )
    failures = missed(summaries)
    for failure in failures:
        print(f"missed: {failure}")
    return 1 if failures and not args.quick else 0


if __name__ == "__main__":
    sys.exit(main())
