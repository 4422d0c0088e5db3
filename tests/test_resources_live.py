"""Resources and pools in a real server: an app under `opentelemetry-instrument` whose one-connection
SQLAlchemy pool is kept busy by concurrent requests. Its pool's utilisation, sampled in-process, is a
`resource` alert; the requests that waited for the connection are `pool_exhaustion`; memory above a
level set below what any host uses fires, and the same host under a level it can't reach stays quiet."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx

from tests.support.apps import RunningApp, wait_until

APP = Path(__file__).parent / "apps" / "pool.py"
FAST_WINDOWS = {
    "OTEL_PERF_RESOURCE_WINDOW_S": "1",
    "OTEL_PERF_MONITOR_LATENESS_S": "0.5",
    "OTEL_PERF_MONITOR_FLUSH_INTERVAL_S": "0.1",
    "OTEL_PERF_ALERTS_COOLDOWN_S": "0",
}


def _start(launch, tmp_path: Path, **env: str) -> RunningApp:
    workdir = tmp_path / "app"
    workdir.mkdir()
    shutil.copy(APP, workdir / "main.py")
    return launch(
        "instrument",
        workdir=workdir,
        seed=False,
        env={
            "OTEL_SERVICE_NAME": "pool-app",
            "OTEL_PERF_MONITOR_STATE_PATH": str(tmp_path / "m.sqlite3"),
            **FAST_WINDOWS,
            **env,
        },
    )


def _busy(app: RunningApp, seconds: float, clients: int = 3, hold_ms: int = 300) -> None:
    deadline = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=app.base_url, timeout=20) as http:
            while time.monotonic() < deadline:
                http.get("/hold", params={"ms": hold_ms}).raise_for_status()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_busy_pool_and_the_waits_for_it_are_reported(launch, tmp_path: Path) -> None:
    app = _start(
        launch, tmp_path, OTEL_PERF_RESOURCE_MEMORY_PERCENT="100", OTEL_PERF_RESOURCE_CPU_PERCENT="100"
    )
    _busy(app, 6)
    alerts = app.wait_for_alerts(
        lambda alerts: {"pool_exhaustion", "resource"} <= {alert["type"] for alert in alerts}, timeout=20
    )
    pools = [alert for alert in alerts if alert["type"] == "resource"]
    assert all(alert["details"]["resource"] == "db_pool" for alert in pools), pools
    assert (
        pools[0]["operation"].startswith("db_pool sqlite:///") and pools[0]["details"]["mean_percent"] >= 80
    )
    waits = [alert for alert in alerts if alert["type"] == "pool_exhaustion"]
    assert waits[0]["operation"] == "GET /hold" and waits[0]["details"]["wait_ms"] > 200
    # The connection itself is never called a slow query.
    assert not [alert for alert in alerts if alert["type"] == "slow_span" and "connect" in alert["title"]]


def test_memory_fires_over_its_level_and_an_idle_pool_is_quiet(launch, tmp_path: Path) -> None:
    app = _start(
        launch, tmp_path, OTEL_PERF_RESOURCE_MEMORY_PERCENT="1", OTEL_PERF_RESOURCE_CPU_PERCENT="100"
    )
    deadline = time.monotonic() + 4
    with httpx.Client(base_url=app.base_url, timeout=10) as http:
        while time.monotonic() < deadline:  # one request at a time: the pool is never waited for
            http.get("/hold", params={"ms": 5}).raise_for_status()
            time.sleep(0.1)
    memory = wait_until(
        lambda: [
            alert
            for alert in app.alerts()
            if alert["type"] == "resource" and alert["details"]["resource"] == "memory"
        ],
        timeout=15,
        what="the memory alert",
    )
    assert memory[0]["details"]["threshold_percent"] == 1 and memory[0]["severity"] in ("high", "critical")
    time.sleep(1.5)
    types = {(alert["type"], alert["details"].get("resource")) for alert in app.alerts()}
    assert ("pool_exhaustion", None) not in types
    assert ("resource", "db_pool") not in types and ("resource", "cpu") not in types
