"""The monitors in real servers: a FastAPI app (tests/apps/versioned.py) under
`opentelemetry-instrument uvicorn`, its latency, error rate and version set from the environment,
driven with HTTP from here, one-second windows. A restart keeps the baselines (SQLite state file),
so the slower release that follows is named; two uvicorn workers share the windows, so they raise
one alert between them, counting both workers' requests; a healthy app raises nothing."""

from __future__ import annotations

import json
import math
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from otel_perf.processors.monitors.store import WindowStore
from otel_perf.processors.monitors.windows import SeriesKey
from tests.support.apps import RunningApp, wait_until

APP = Path(__file__).parent / "apps" / "versioned.py"
SERVICE = "versioned"
OPERATION = "GET /items/{item_id}"
FAST_MS, SLOW_MS = 25, 75  # the release makes the endpoint 3 times slower
BASELINE_S = 10  # one-second windows of the old version before the restart
AFTER_S = 6  # …and of the new one (the alert comes after ~4: three windows, then lateness)
SETTLE_S = 1.5  # the last window closes (lateness 0.5 s) and is judged
MIN_REQUESTS, MIN_REFERENCE_WINDOWS = 50, 4  # 50: what a p95 needs per window
MONITOR_ENV = {
    "OTEL_PERF_MONITOR_WINDOW_S": "1",
    "OTEL_PERF_MONITOR_LATENESS_S": "0.5",
    "OTEL_PERF_MONITOR_FLUSH_INTERVAL_S": "0.2",
    "OTEL_PERF_TREND_SEASON_S": "0",
    "OTEL_PERF_TREND_MIN_REQUESTS": str(MIN_REQUESTS),
    "OTEL_PERF_TREND_MIN_REFERENCE_WINDOWS": str(MIN_REFERENCE_WINDOWS),
    # No cooldown: every alert the monitors raise is written, so a duplicate would show.
    "OTEL_PERF_ALERTS_COOLDOWN_S": "0",
}
MONITOR_TYPES = ("trend_degradation", "error_rate")

Launch = Callable[..., RunningApp]


@dataclass
class Site:
    """Where an app runs, restart after restart: one state file, one alerts file."""

    root: Path
    launch: Launch
    apps: list[RunningApp] = field(default_factory=list)

    @property
    def state_path(self) -> Path:
        return self.root / "monitors.sqlite3"

    @property
    def alerts_path(self) -> Path:
        return self.root / "alerts.jsonl"

    def start(self, version: str, delay_ms: float, error_rate: float = 0.0, workers: int = 1) -> RunningApp:
        workdir = self.root / f"run{len(self.apps)}-{version}"
        workdir.mkdir(parents=True)
        shutil.copy(APP, workdir / "main.py")
        app = self.launch(
            "instrument",
            workdir=workdir,
            seed=False,
            command=[
                *(sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", "{port}"),
                *("--workers", str(workers), "--no-access-log"),
            ],
            env={
                **MONITOR_ENV,
                "OTEL_SERVICE_NAME": SERVICE,
                "OTEL_RESOURCE_ATTRIBUTES": f"service.version={version}",
                "OTEL_PERF_MONITOR_STATE_PATH": str(self.state_path),
                "OTEL_PERF_ALERTS_FILE": str(self.alerts_path),
                "APP_DELAY_MS": str(delay_ms),
                "APP_ERROR_RATE": str(error_rate),
            },
        )
        self.apps.append(app)
        return app

    def alerts(self, alert_type: str | None = None) -> list[dict[str, Any]]:
        if not self.alerts_path.exists():
            return []
        alerts = [json.loads(line) for line in self.alerts_path.read_text().splitlines() if line.strip()]
        return [alert for alert in alerts if alert_type is None or alert["type"] == alert_type]

    def monitor_alerts(self) -> list[dict[str, Any]]:
        return [alert for alert in self.alerts() if alert["type"] in MONITOR_TYPES]

    def wait_for(self, alert_type: str, timeout: float = 30) -> dict[str, Any]:
        try:
            return wait_until(lambda: self.alerts(alert_type), timeout, what=alert_type)[0]
        except AssertionError:
            raise AssertionError(
                f"no {alert_type} alert; got {self.alerts()}\nlast app log:\n{self.apps[-1].log()[-4000:]}"
            ) from None

    def busy_windows(self) -> int:
        """The operation's sealed windows busy enough for the trend monitor to compare."""
        store = WindowStore(self.state_path)
        try:
            windows = store.windows(SeriesKey(SERVICE, OPERATION), 0)
        finally:
            store.close()
        return sum(aggregate.total.count >= MIN_REQUESTS for _, aggregate in windows)

    def stop(self, app: RunningApp) -> None:
        app.stop()
        assert app.process.returncode == 0, app.log()[-4000:]  # graceful: its windows saved


@dataclass(frozen=True)
class Answer:
    at: float  # server time, just before it answered (the span ends right after)
    status: int
    pid: int


class Load:
    """`clients` threads requesting the endpoint until stopped; what came back, for counting."""

    def __init__(
        self, app: RunningApp, clients: int = 8, new_connections: bool = False, at_window_start: bool = False
    ) -> None:
        self.app = app
        self.started_at = 0.0
        self._at_window_start = at_window_start
        self.answers: list[Answer] = []
        self.failures: list[BaseException] = []
        # A fresh connection per request lets each one be accepted by either uvicorn worker.
        self._limits = httpx.Limits(max_keepalive_connections=0) if new_connections else httpx.Limits()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def _run(self, client_number: int) -> None:
        try:
            with httpx.Client(base_url=self.app.base_url, timeout=10, limits=self._limits) as client:
                number = 0
                while not self._stop.is_set():
                    response = client.get(f"/items/{client_number * 1_000_000 + number}")
                    assert response.status_code in (200, 500), response.text
                    body = response.json()
                    self.answers.append(Answer(body["at"], response.status_code, body["pid"]))
                    number += 1
        except BaseException as error:
            self.failures.append(error)

    def __enter__(self) -> Load:
        if self._at_window_start:  # so that the first window is a whole one
            time.sleep(math.ceil(time.time()) - time.time() + 0.01)
        self.started_at = time.time()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        if kind is None and self.failures:
            raise AssertionError(f"requests failed: {self.failures[:3]}\n{self.app.log()[-4000:]}")

    def in_window(self, start_s: float, length_s: float = 1.0) -> list[Answer]:
        return [answer for answer in self.answers if start_s <= answer.at < start_s + length_s]


def drive(app: RunningApp, seconds: float, **kwargs: Any) -> Load:
    with Load(app, **kwargs) as load:
        time.sleep(seconds)
    assert len(load.answers) >= seconds * MIN_REQUESTS * 1.5, len(load.answers)
    return load


def _seconds(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def _check_trend(alert: dict[str, Any], version: str, released_at: float) -> None:
    assert alert["service"] == SERVICE and alert["operation"] == OPERATION, alert
    details = alert["details"]
    assert details["version"] == version and version in alert["title"], alert
    assert details["status"] == "firing" and details["canary"] is False, details
    # p95 of a 25 ms sleep, then of a 75 ms one (the sketch is 1 % accurate; the server adds a little).
    assert details["baseline_ms"] >= FAST_MS * 0.98 and details["current_ms"] >= SLOW_MS * 0.98, details
    assert 1.8 <= details["current_ms"] / details["baseline_ms"] <= SLOW_MS / FAST_MS * 1.05, details
    # The change is the first window the new version served in.
    assert math.floor(released_at) <= _seconds(details["change_at"]) <= released_at + 1, (
        released_at,
        details,
    )


def test_a_restart_keeps_the_baselines_so_the_slower_release_is_named(launch: Launch, tmp_path: Path) -> None:
    site, control = Site(tmp_path / "site", launch), Site(tmp_path / "control", launch)
    old = site.start("1.0", FAST_MS)
    drive(old, BASELINE_S)
    site.stop(old)
    assert site.monitor_alerts() == []

    new = site.start("2.0", SLOW_MS)
    fresh = control.start("2.0", SLOW_MS)  # the same release and traffic, but no baselines
    with Load(new) as load, Load(fresh) as control_load:
        alert = site.wait_for("trend_degradation")
        time.sleep(2)  # two windows more, still slower: no second alert
    time.sleep(SETTLE_S)

    _check_trend(alert, "2.0", load.started_at)
    assert site.alerts("trend_degradation") == [alert]
    assert site.alerts("error_rate") == []
    # Without the baselines the restart kept, the same traffic over the same time says nothing…
    assert control.monitor_alerts() == [], control.monitor_alerts()
    # …though that app was watched and served as much.
    assert len(control_load.answers) >= 0.7 * len(load.answers), (
        len(control_load.answers),
        len(load.answers),
    )
    assert control.busy_windows() >= 3


def test_two_workers_raise_one_alert_between_them_counting_both(launch: Launch, tmp_path: Path) -> None:
    site = Site(tmp_path / "site", launch)
    old = site.start("1.0", FAST_MS, workers=2)
    baseline = drive(old, BASELINE_S, clients=10, new_connections=True)
    assert len({answer.pid for answer in baseline.answers}) == 2
    site.stop(old)

    new = site.start("2.0", SLOW_MS, error_rate=0.3, workers=2)
    with Load(new, clients=10, new_connections=True, at_window_start=True) as load:
        site.wait_for("error_rate")
        site.wait_for("trend_degradation")
        time.sleep(2)  # two windows more, still failing and slower: no second alert
    time.sleep(SETTLE_S)

    # One alert of each, not one per worker.
    (errors,) = site.alerts("error_rate")
    (trend,) = site.alerts("trend_degradation")
    _check_trend(trend, "2.0", load.started_at)

    assert errors["operation"] == OPERATION, errors
    details = errors["details"]
    assert details["status"] == "firing" and details["version"] == "2.0", details
    # The window judged (a whole one: the traffic began with it) holds both workers' requests:
    # what was sent in it, give or take the few answered at its edges; one worker's alone would be
    # a quarter short at least.
    sent = load.in_window(_seconds(details["window_start"]), details["window_s"])
    by_worker = Counter(answer.pid for answer in sent)
    assert len(sent) >= 30 and min(by_worker.values(), default=0) >= 0.25 * len(sent), by_worker
    assert abs(details["requests"] - len(sent)) <= 2 + 0.05 * len(sent), (details, by_worker)
    failed = sum(answer.status == 500 for answer in sent)
    assert abs(details["errors"] - failed) <= max(2, 0.1 * failed), (details, failed)
    assert 0.1 <= details["error_rate"] <= 0.5, details


def test_a_healthy_app_raises_no_monitor_alert(launch: Launch, tmp_path: Path) -> None:
    site = Site(tmp_path / "site", launch)
    old = site.start("1.0", FAST_MS)
    drive(old, BASELINE_S)
    site.stop(old)
    new = site.start("1.0", FAST_MS)
    drive(new, AFTER_S)
    time.sleep(SETTLE_S)
    assert site.monitor_alerts() == []
    # Not for want of windows: enough to compare, on both sides of the restart.
    assert site.busy_windows() >= 2 * MIN_REFERENCE_WINDOWS + 3
