"""The monitors in the collector pipeline: an app exporting to the real collector (OTEL_PERF_MODE=
collector, so it watches nothing itself), spanmetrics routed by service to one of two analyzers,
whose trend monitor compares the app's release with the one before it: one alert, naming the
release, from one replica, in the alert log and Alertmanager. The app's system metrics reach the
analyzers by the same route, and their resource monitor reads them."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support.apps import RunningApp, wait_until

APP = Path(__file__).resolve().parents[1] / "apps" / "versioned.py"
SERVICE = "versioned-pipeline"
MONITORS = {
    "OTEL_PERF_MONITOR_WINDOW_S": "2",
    "OTEL_PERF_MONITOR_LATENESS_S": "2",
    "OTEL_PERF_MONITOR_FLUSH_INTERVAL_S": "0.5",
    "OTEL_PERF_TREND_SEASON_S": "0",
    "OTEL_PERF_TREND_MIN_REQUESTS": "10",
    "OTEL_PERF_TREND_MIN_REFERENCE_WINDOWS": "4",
    "OTEL_PERF_ALERTS_COOLDOWN_S": "0",
    # Resources from the system metrics the app exports: memory over a level no host stays under.
    "OTEL_PERF_RESOURCE_WINDOW_S": "4",
    "OTEL_PERF_RESOURCE_MEMORY_PERCENT": "1",
    "OTEL_PERF_RESOURCE_MIN_SAMPLES": "1",
}


def _start(launch, stack, root: Path, version: str, delay_ms: int) -> RunningApp:
    workdir = root / version
    workdir.mkdir(parents=True)
    shutil.copy(APP, workdir / "main.py")
    return launch(
        "instrument",
        workdir=workdir,
        seed=False,
        command=[sys.executable, "-m", "uvicorn", "main:app", "--port", "{port}", "--no-access-log"],
        export=stack.app_export_env(),
        env={
            "OTEL_SERVICE_NAME": SERVICE,
            "OTEL_RESOURCE_ATTRIBUTES": f"service.version={version}",
            "OTEL_PERF_MODE": "collector",
            "APP_DELAY_MS": str(delay_ms),
        },
    )


def _drive(app: RunningApp, seconds: float) -> None:
    deadline = time.monotonic() + seconds

    def loop() -> None:
        with httpx.Client(base_url=app.base_url, timeout=10) as client:
            number = 0
            while time.monotonic() < deadline:
                client.get(f"/items/{number}").raise_for_status()
                number += 1

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_release_regression_is_one_alert_from_the_analyzers_via_spanmetrics(
    launch, fresh_stack, tmp_path: Path
) -> None:
    stack = fresh_stack(analyzers=2, analyzer_env=MONITORS)
    before = _start(launch, stack, tmp_path, "1.0", 20)
    _drive(before, 24)  # a dozen 2-s windows of the old release
    before.stop()
    after = _start(launch, stack, tmp_path, "2.0", 80)

    def trend_alerts() -> list[dict]:
        return [alert for alert in stack.analyzer_alerts() if alert["type"] == "trend_degradation"]

    driver = threading.Thread(target=_drive, args=(after, 40))
    driver.start()
    try:
        alerts = wait_until(trend_alerts, timeout=45, what="the trend alert from the analyzers")
    finally:
        driver.join()
    time.sleep(3)
    alerts = trend_alerts()
    assert len(alerts) == 1, alerts  # one regression, one alert: not one per replica
    alert = alerts[0]
    assert alert["service"] == SERVICE and alert["operation"] == "GET /items/{item_id}"
    assert alert["details"]["version"] == "2.0"
    assert alert["details"]["current_ms"] > 2 * alert["details"]["baseline_ms"]
    assert alert["source"] == "monitor"
    # The app itself watched nothing: the analyzer's view came from spanmetrics, not its own spans.
    rig = stack.stack
    logs = "".join(
        service.log_path(rig.state_dir).read_text()
        for service in rig.services()
        if service.name.startswith("analyzer")
    )
    assert "spanmetrics arrive" in logs
    # The app's system metrics (exported every 2 s) reached the analyzers' resource monitor.
    memory = [
        alert
        for alert in stack.analyzer_alerts()
        if alert["type"] == "resource" and alert["details"]["resource"] == "memory"
    ]
    assert memory and memory[0]["service"] == SERVICE and memory[0]["details"]["threshold_percent"] == 1
    assert memory[0]["operation"].startswith("memory on ")
    # Alertmanager got it too (the alert span of a trend belongs to no trace).
    wait_until(
        lambda: [
            a for a in stack.alertmanager_alerts(SERVICE) if "trend_degradation" in a["labels"]["event_name"]
        ],
        timeout=30,
        what="the trend alert in Alertmanager",
    )
