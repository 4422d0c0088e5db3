"""The trend monitor's detection targets on the benchmark's quick series (a few per case, fixed seed):
a change to `trend.py` that alerts on noise, misses +30 % steps, reports spikes or loses the release
fails here before the full run (`python -m benchmarks.detection.trends`) would show it."""

from __future__ import annotations

import pytest

from benchmarks.detection import trends
from otel_perf.processors.monitors.trend import TrendSettings

# Misses the monitor has today (full run, seed 1), kept visible without failing the suite: remove an
# entry once trend.py meets its target.
KNOWN_MISSES = {
    "step +30 %, daily + weekly season": "76 % found within 6 windows in the full run (target 95 %): "
    "the p95 of quiet night windows is too noisy to confirm a +30 % step sooner",
}


@pytest.fixture(scope="module")
def quick() -> dict[str, trends.CaseResult]:
    return {summary.case.name: summary for summary in trends.run(quick=True, seed=1, jobs=1)}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            case.name,
            marks=[pytest.mark.xfail(reason=KNOWN_MISSES[case.name])] if case.name in KNOWN_MISSES else [],
        )
        for case in trends.CASES
        if case.quick
    ],
)
def test_quick_case_meets_its_targets(quick: dict[str, trends.CaseResult], name: str) -> None:
    summary = quick[name]
    assert summary.series == next(case.quick for case in trends.CASES if case.name == name)
    assert not summary.missed, summary.missed


def test_every_target_is_judged_in_quick_mode(quick: dict[str, trends.CaseResult]) -> None:
    judged = {target.split(" ")[0] for summary in quick.values() for target in summary.targets}
    assert judged == {"false", "spikes", "found", "version"}
    step = quick["step +30 %, new version"]
    assert step.found == 1.0 and step.right_version == 1.0 and step.delays


def test_a_detuned_monitor_misses_the_targets() -> None:
    """The harness can fail: too high a threshold finds no +30 % step, too loose a test alerts on noise."""
    by_name = {case.name: case for case in trends.CASES}
    deaf = trends.run([by_name["step +30 %"]], series=2, settings=TrendSettings(min_increase=0.6))
    assert deaf[0].found == 0.0 and deaf[0].missed
    jumpy = trends.run(
        [by_name["no change, flat"]],
        series=2,
        settings=TrendSettings(min_increase=0.05, min_delta_ms=1, significance=0.2),
    )
    assert jumpy[0].false_alerts > 0 and jumpy[0].missed
