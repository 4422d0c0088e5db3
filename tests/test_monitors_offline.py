"""The monitors over days of exported traffic: `otel-perf analyze` (a real subprocess, default hour
windows and settings) on OTLP JSON lines from `benchmarks.detection.traffic`, where a release makes
one endpoint slower and another one fail. The slower endpoint gives exactly one trend alert naming
the release, the failing one an error-rate alert naming it, the unchanged one nothing; the same
days without a release (the daily cycle alone), or with a harmless release, give no monitor alert;
behind a mounted sub-application the alerts name the whole routes; and a replay is deterministic
and neither reads nor writes the default state file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from benchmarks.detection.traffic import HOUR_NS, Operation, Traffic, otlp_json_lines

OTEL_PERF = str(Path(sys.executable).parent / "otel-perf")
MONITOR_TYPES = {"trend_degradation", "error_rate"}

TRAFFIC = Traffic()  # 10 days, 60 requests an hour per endpoint, 1.5.0 released on day 9
assert TRAFFIC.release_at_hour is not None
RELEASE_NS = TRAFFIC.start_ns + TRAFFIC.release_at_hour * HOUR_NS
OLD, NEW = TRAFFIC.versions
SLOWER, FAILING, UNCHANGED = TRAFFIC.operations
assert SLOWER.slower_after_release > 1.5 and FAILING.error_rate_after_release is not None
assert UNCHANGED.slower_after_release == 1.0 and UNCHANGED.error_rate_after_release is None


@dataclass
class Replay:
    """One `otel-perf analyze` run: its alerts (stdout, JSON lines) and its state home."""

    stdout: str
    stderr: str
    returncode: int
    state_home: Path

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def of(self, alert_type: str, operation: str | None = None) -> list[dict[str, Any]]:
        return [
            alert
            for alert in self.alerts
            if alert["type"] == alert_type and (operation is None or alert["operation"] == operation)
        ]


@dataclass
class Replays:
    release: Replay  # the release, fresh $XDG_STATE_HOME
    again: Replay  # the same file, $XDG_STATE_HOME holding a state file that knows its windows
    no_release: Replay
    harmless_release: Replay
    mounted: Replay  # the release, every endpoint served by a sub-app mounted at /api
    state_file: Path
    state_digest_before: str
    state_files_before: list[Path]


def _write(path: Path, traffic: Traffic) -> Path:
    with path.open("w") as file:
        for line in otlp_json_lines(traffic):
            file.write(line + "\n")
    return path


def _start(path: Path, state_home: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("OTEL_")},
        "XDG_STATE_HOME": str(state_home),
        **(env or {}),
    }
    return subprocess.Popen(
        [OTEL_PERF, "analyze", str(path)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], state_home: Path) -> Replay:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return Replay(stdout, stderr, process.returncode, state_home)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ns(iso_time: str) -> int:
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()) * 10**9


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> Replays:
    """Every replay the tests read, run side by side (each is seconds of CPU)."""
    root = tmp_path_factory.mktemp("monitors-offline")
    release = _write(root / "release.jsonl", TRAFFIC)
    no_release = _write(root / "no-release.jsonl", replace(TRAFFIC, release_at_hour=None))
    unchanged = tuple(
        Operation(operation.name, operation.median_ms, error_rate=operation.error_rate)
        for operation in TRAFFIC.operations
    )
    harmless = _write(root / "harmless.jsonl", replace(TRAFFIC, operations=unchanged))
    mounted = _write(root / "mounted.jsonl", replace(TRAFFIC, mount="/api"))

    # A state file at the default place of a later run's $XDG_STATE_HOME, holding the slower
    # endpoint's windows around the release: read, it would change that run's alerts (those windows
    # sealed already, so not judged again).
    kept_home = root / "kept-state"
    state_file = kept_home / "otel-perf" / "monitors.sqlite3"
    state_file.parent.mkdir(parents=True)  # a given state path's directory is not created for it
    around_release = replace(
        TRAFFIC,
        start_ns=RELEASE_NS - 2 * HOUR_NS,
        hours=8,
        release_at_hour=None,
        operations=(SLOWER,),
    )
    _finish(
        _start(
            _write(root / "around-release.jsonl", around_release),
            root / "state-unused",
            {"OTEL_PERF_MONITOR_STATE_PATH": str(state_file)},
        ),
        root / "state-unused",
    )
    assert state_file.is_file()
    digest, files = _digest(state_file), sorted(kept_home.rglob("*"))

    homes = {name: root / f"state-{name}" for name in ("release", "no-release", "harmless", "mounted")}
    processes = {
        "release": _start(release, homes["release"]),
        "again": _start(release, kept_home),
        "no-release": _start(no_release, homes["no-release"]),
        "harmless": _start(harmless, homes["harmless"]),
        "mounted": _start(mounted, homes["mounted"]),
    }
    done = {name: _finish(process, homes.get(name, kept_home)) for name, process in processes.items()}
    return Replays(
        release=done["release"],
        again=done["again"],
        no_release=done["no-release"],
        harmless_release=done["harmless"],
        mounted=done["mounted"],
        state_file=state_file,
        state_digest_before=digest,
        state_files_before=files,
    )


def test_the_slower_endpoint_gives_one_trend_alert_naming_the_release(replays: Replays) -> None:
    replay = replays.release
    requests = TRAFFIC.hours * TRAFFIC.requests_per_hour * len(TRAFFIC.operations)
    assert f"Read {requests} spans" in replay.stderr
    trends = replay.of("trend_degradation")
    assert len(trends) == 1, trends
    (trend,) = trends
    assert trend["operation"] == SLOWER.name and trend["service"] == TRAFFIC.service
    assert trend["source"] == "monitor"
    details = trend["details"]
    assert details["version"] == NEW and details["status"] == "firing", details
    assert details["quantile"] == "p95" and details["canary"] is False, details
    assert NEW in trend["title"]
    # The change is placed at the release, and seen within hours of it (span time, not run time).
    assert abs(_ns(details["change_at"]) - RELEASE_NS) <= HOUR_NS, details
    assert RELEASE_NS < _ns(trend["time"]) <= RELEASE_NS + 6 * HOUR_NS, trend["time"]
    # p95 before and after: the factor the traffic was generated with.
    ratio = details["current_ms"] / details["baseline_ms"]
    assert ratio == pytest.approx(SLOWER.slower_after_release, rel=0.15), details


def test_the_failing_endpoint_gives_an_error_rate_alert_naming_the_release(replays: Replays) -> None:
    replay = replays.release
    errors = replay.of("error_rate")
    assert {alert["operation"] for alert in errors} == {FAILING.name}, errors
    firing = [alert for alert in errors if alert["details"]["status"] == "firing"]
    assert len(firing) == 1, errors  # one regression, one alert: it stays open while it fails
    (alert,) = firing
    details = alert["details"]
    assert details["version"] == NEW and NEW in alert["title"], alert
    assert details["error_rate"] >= 0.05 and details["errors"] >= 5, details
    assert details["errors"] / details["requests"] == pytest.approx(details["error_rate"], abs=1e-3)
    # The first window of the release (at most one later, should it have been too quiet).
    assert 0 <= _ns(details["window_start"]) - RELEASE_NS <= HOUR_NS, details


def test_behind_a_mount_the_alerts_name_the_whole_routes(replays: Replays) -> None:
    # Each request is the mount's server span (`GET /api`) and the sub-app's span under it: before,
    # the monitors saw one `GET /api` series, slower by a third of the slowdown, and no failing one.
    replay = replays.mounted
    requests = TRAFFIC.hours * TRAFFIC.requests_per_hour * len(TRAFFIC.operations)
    assert f"Read {2 * requests} spans" in replay.stderr
    trends, errors = replay.of("trend_degradation"), replay.of("error_rate")
    assert [alert["operation"] for alert in trends] == [SLOWER.name.replace(" /", " /api/", 1)], trends
    assert {alert["operation"] for alert in errors} == {FAILING.name.replace(" /", " /api/", 1)}, errors
    assert trends[0]["details"]["version"] == NEW
    assert {alert["type"] for alert in replay.alerts} == MONITOR_TYPES


def test_the_unchanged_endpoint_gives_no_alert_at_all(replays: Replays) -> None:
    assert [alert for alert in replays.release.alerts if alert["operation"] == UNCHANGED.name] == []
    assert {alert["type"] for alert in replays.release.alerts} == MONITOR_TYPES


def test_the_daily_cycle_without_a_release_is_not_a_regression(replays: Replays) -> None:
    replay = replays.no_release
    assert [alert for alert in replay.alerts if alert["type"] in MONITOR_TYPES] == []
    assert f"Read {TRAFFIC.hours * TRAFFIC.requests_per_hour * len(TRAFFIC.operations)} spans" in (
        replay.stderr
    )


def test_a_release_without_a_regression_names_nothing(replays: Replays) -> None:
    replay = replays.harmless_release
    assert [alert for alert in replay.alerts if alert["type"] in MONITOR_TYPES] == []
    assert NEW not in replay.stdout


def test_a_replay_is_deterministic_and_keeps_no_state(replays: Replays) -> None:
    assert replays.release.alerts  # not vacuous: the alerts the other tests read
    # Nothing created under the state home of a plain run.
    for replay in (replays.release, replays.no_release, replays.harmless_release):
        home = replay.state_home
        assert not home.exists() or list(home.rglob("*")) == [], list(home.rglob("*"))
    # A state file at the default place is neither read (the same alerts as with none) nor
    # written (the same bytes, no new files beside it).
    assert replays.again.stdout == replays.release.stdout
    assert _digest(replays.state_file) == replays.state_digest_before
    assert sorted(replays.again.state_home.rglob("*")) == replays.state_files_before
