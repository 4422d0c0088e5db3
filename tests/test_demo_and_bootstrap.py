"""`otel-perf demo` (the README's first command) and the startup checks users rely on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.apps import drive_shop

BIN = Path(sys.executable).parent
TEST_DEPS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "otel-perf" / "test-deps"


def test_demo_runs_the_shop_and_shows_the_findings() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    result = subprocess.run(
        [str(BIN / "otel-perf"), "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**env, "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for expected in (
        "N+1 queries: 25×",
        "Order.customer",
        "N+1 queries: 20× SELECT count(*) FROM items WHERE order_id = ?",
        "N+1 HTTP calls: 8× GET",
        "Slow query WITH RECURSIVE",
        "selectinload(Order.customer)",
        "GET /products/search got slower: p95",
    ):
        assert expected in out, f"{expected!r} missing from the demo output:\n{out}"
    # The restart as 1.1.0: the trend monitor names the release that made search slower.
    alerts_file = re.search(r"Alerts as JSON lines: (\S+)", out)
    assert alerts_file, out
    alerts = [json.loads(line) for line in Path(alerts_file.group(1)).read_text().splitlines()]
    trends = [alert for alert in alerts if alert["type"] == "trend_degradation"]
    assert [(alert["operation"], alert["details"]["version"]) for alert in trends] == [
        ("GET /products/search", "1.1.0")
    ], trends
    quiet_line = next(line for line in out.splitlines() if line.startswith("Quiet, as they should be:"))
    for endpoint in ("/orders/eager", "/orders/recent", "/dashboard", "/stock/batch", "/healthz"):
        assert endpoint in quiet_line
    # No collector runs: export errors stay in the app's log, out of the user's output.
    assert "StatusCode.UNAVAILABLE" not in out + result.stderr


def _sqlalchemy_21() -> Path:
    """SQLAlchemy 2.1 from PyPI into a cached directory, to put in front of the venv's 2.0."""
    target = TEST_DEPS / "sqlalchemy-2.1.9"
    if not (target / "sqlalchemy").is_dir():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(target),
                "sqlalchemy==2.1.9",
            ],
            check=True,
        )
    return target


def test_sqlalchemy_21_is_warned_about_loudly(launch) -> None:
    app = launch("instrument", env={"PYTHONPATH": str(_sqlalchemy_21())})
    drive_shop(app, ["/orders", "/stock/sequential"])
    alerts = app.wait_for_alerts(
        lambda alerts: any(alert["operation"] == "GET /stock/sequential" for alert in alerts)
    )
    log = app.log()
    assert "2.1.9 is installed, but the sqlalchemy instrumentation only supports" in log
    assert "no database query will be traced" in log and "pip install 'sqlalchemy<2.1'" in log
    # Exactly what the warning says: no query spans, so the ORM N+1 goes unseen; HTTP still works.
    assert all(alert["operation"] != "GET /orders" for alert in app.settle())
    assert alerts
