"""Apps whose API is a mounted sub-application (tests/apps/mounted.py: `app.mount("/api", api)` and
a versioned API mounted in that) under both launch modes and real uvicorn. The instrumentation
names every request behind the mount `GET /api`; otel-perf must not: findings, the analysis budget
and the trend series each take the whole route. Alerts are read from the file sink, the series from
the monitors' state file; on the analyzer host, the app exports to a real `otel-perf analyzer`."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_perf.processors.monitors.windows import REQUESTS, SeriesKey
from tests.support.analyzer import Analyzer
from tests.support.apps import RunningApp, start_app, wait_until

APP = Path(__file__).parent / "apps" / "mounted.py"
SERVICE = "mounted"
COUNT = "GET /api/authors/count"
AUTHORS = "GET /api/authors/{count}/names"
BOOKS = "GET /api/v1/books/{count}/titles"


@pytest.fixture(scope="module", params=["instrument", "sitecustomize"])
def mounted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    workdir = tmp_path_factory.mktemp(f"mounted-{request.param}")
    shutil.copy(APP, workdir / "main.py")
    app = start_app(
        workdir,
        request.param,
        seed=False,
        command=[sys.executable, "main.py"],
        env={
            "OTEL_SERVICE_NAME": SERVICE,
            # A busy production setting: after one analysis the budget is spent for minutes, so a
            # request is analysed only when its own endpoint was not analysed in the last 10 s.
            "OTEL_PERF_ANALYSIS_CPU_SHARE": "0.0001",
            "OTEL_PERF_ALERTS_COOLDOWN_S": "0",  # every N+1 analysed is written: a repeat would show
            "OTEL_PERF_MONITOR_STATE_PATH": str(workdir / "monitors.sqlite3"),
            "OTEL_PERF_MONITOR_FLUSH_INTERVAL_S": "0.2",
        },
    )
    try:
        yield app
    finally:
        app.stop()


def _n_plus_ones(app: RunningApp) -> Counter[str]:
    return Counter(alert["operation"] for alert in app.alerts() if alert["type"] == "n_plus_one")


def _series(path: Path) -> set[str]:
    """The request series the monitors wrote (whole windows and a process's parts of open ones)."""
    if not path.exists():
        return set()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT series FROM windows UNION SELECT series FROM parts").fetchall()
    keys = [SeriesKey.decode(series) for (series,) in rows]
    return {key.operation for key in keys if key.service == SERVICE and key.kind == REQUESTS}


@pytest.fixture(scope="module")
def traffic(mounted: RunningApp) -> dict[str, Any]:
    """The fast endpoint first (it spends the budget under its name and the mount's), then each N+1
    once, then the first N+1 ten times more within the 10 s."""
    for _ in range(5):
        assert mounted.get("/api/authors/count").json() == 10
    mounted.get("/api/authors/6/names")
    mounted.get("/api/v1/books/5/titles")
    first = mounted.wait_for_alerts(lambda alerts: {AUTHORS, BOOKS} <= set(_n_plus_ones(mounted)))
    for _ in range(10):
        mounted.get("/api/authors/6/names")
    return {"first": first, "after": mounted.settle(2.0)}


def test_each_n_plus_one_behind_a_mount_is_analysed_and_filed_under_its_whole_route(
    mounted: RunningApp, traffic: dict[str, Any]
) -> None:
    # Before, the three endpoints were one `GET /api` for the budget: the fast endpoint's analysis
    # left the N+1s unanalysed for 10 s.
    alerts = [alert for alert in traffic["first"] if alert["type"] == "n_plus_one"]
    by_operation = {alert["operation"]: alert for alert in alerts}
    assert set(by_operation) == {AUTHORS, BOOKS}, alerts
    assert by_operation[AUTHORS]["details"]["count"] == 6
    assert by_operation[BOOKS]["details"]["count"] == 5
    assert "GET /api" not in {alert["operation"] for alert in traffic["after"]}


def test_the_cpu_share_still_holds_behind_a_mount(mounted: RunningApp, traffic: dict[str, Any]) -> None:
    # Eleven requests of one N+1 endpoint within 10 s at a spent budget: analysed once. (Admitting
    # every request behind a mount, because its start-time name `GET /api` was never charged, would
    # analyse all eleven.)
    assert _n_plus_ones(mounted)[AUTHORS] == 1, traffic["after"]


def test_trend_series_are_the_whole_routes(mounted: RunningApp, traffic: dict[str, Any]) -> None:
    series = wait_until(
        lambda: (found := _series(mounted.workdir / "monitors.sqlite3")) >= {COUNT, AUTHORS, BOOKS} and found,
        timeout=10,
        what="the monitors' series",
    )
    assert series == {"GET /healthz", COUNT, AUTHORS, BOOKS}


def test_on_the_analyzer_host_too(tmp_path: Path) -> None:
    # The app analyses nothing itself (mode collector) and exports OTLP/HTTP to the analyzer, whose
    # monitors read requests from the spans (no spanmetrics here).
    # The SDK exports every 100 ms: a request's spans may come in two batches, which the analyzer
    # must join (its wait after a trace's last span) rather than analyse as two fragments.
    analyzer = Analyzer(
        tmp_path / "analyzer",
        {"OTEL_PERF_MONITOR_FLUSH_INTERVAL_S": "0.2", "OTEL_PERF_ANALYZER_TRACE_WAIT_MS": "1500"},
    )
    workdir = tmp_path / "app"
    workdir.mkdir()
    shutil.copy(APP, workdir / "main.py")
    app = start_app(
        workdir,
        seed=False,
        command=[sys.executable, "main.py"],
        export={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{analyzer.http_port}/v1/traces",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
        env={"OTEL_SERVICE_NAME": SERVICE, "OTEL_PERF_MODE": "collector"},
    )
    try:
        app.get("/api/authors/count")
        app.get("/api/authors/6/names")
        app.get("/api/v1/books/5/titles")
        try:
            alerts = wait_until(
                lambda: (
                    {AUTHORS, BOOKS} <= {alert["operation"] for alert in analyzer.alerts("n_plus_one")}
                    and analyzer.alerts("n_plus_one")
                ),
                timeout=30,
                what="the analyzer's N+1 alerts",
            )
        except AssertionError as error:
            raise AssertionError(
                f"{error}; alerts: {analyzer.alerts()}\nanalyzer log:\n{analyzer.log.read_text()[-3000:]}"
                f"\napp log:\n{app.log()[-3000:]}"
            ) from None
        assert {alert["operation"] for alert in alerts} == {AUTHORS, BOOKS}, alerts
        series = wait_until(
            lambda: (
                (found := _series(analyzer.alerts_file.parent / "monitors.sqlite3"))
                >= {COUNT, AUTHORS, BOOKS}
                and found
            ),
            timeout=10,
            what="the analyzer's series",
        )
        assert series == {"GET /healthz", COUNT, AUTHORS, BOOKS}
    finally:
        app.stop()
        analyzer.stop()
