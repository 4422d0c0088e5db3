"""`otel-perf demo` (the README's first command) and the startup checks users rely on."""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from otel_perf.demo.runner import (
    BASELINE_S,
    COMPRESSED_TIME,
    EXPECTED_FINDINGS,
    RELEASES,
    SEARCH_RATE,
    WORKDIR_PREFIX,
    YOUR_APP,
    DemoResult,
    print_result,
)
from otel_perf.processors.findings import Finding
from otel_perf.processors.monitors.trend import TrendMonitor, TrendSettings
from otel_perf.processors.monitors.windows import Aggregate, SeriesKey, Window
from otel_perf.render import findings_table
from tests.support.apps import drive_shop

BIN = Path(sys.executable).parent
TEST_DEPS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "otel-perf" / "test-deps"


# The fixes the demo's findings carry, each of which must be readable in full at 80 columns.
DEMO_FIXES = (
    "eager-load it: .options(selectinload(Order.customer)) on the query that loads these objects",
    "fetch all rows in one query (WHERE … IN (…) or a JOIN) instead of one per item",
    "call a batch endpoint once, or run the calls concurrently",
    "call a batch endpoint once instead of one call per item",
)


def _squeezed(text: str) -> str:
    """Text without whitespace: a cell's lines joined, whether rich wrapped them at a space or
    folded a long word."""
    return re.sub(r"\s+", "", text)


def _table_rows(out: str) -> list[list[str]]:
    """The findings table's rows, each as its cells' text (a cell's lines joined by newlines)."""
    lines = out.splitlines()
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("┡")) + 1 :]
    rows: list[list[str]] = []
    current: list[list[str]] = []
    for line in body:
        if line.startswith(("├", "└")):
            rows.append(["\n".join(cell).strip() for cell in zip(*current, strict=True)])
            current = []
            if line.startswith("└"):
                return rows
        elif line.startswith("│"):
            current.append([cell.strip() for cell in line.split("│")[1:-1]])
    raise AssertionError(f"no end to the findings table:\n{out}")


def _demo_entries(directory: str) -> set[str]:
    return {name for name in os.listdir(directory) if name.startswith(WORKDIR_PREFIX)}


def test_demo_runs_the_shop_and_shows_the_findings(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    # The demo's temp dir of its own: anything it (or the shop) leaves there is found, whatever its name.
    temp = tmp_path / "tmp"
    temp.mkdir()
    shared_before = _demo_entries(tempfile.gettempdir())
    result = subprocess.run(
        [str(BIN / "otel-perf"), "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**env, "COLUMNS": "80", "TMPDIR": str(temp)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert os.listdir(temp) == [], "the demo left files behind"
    assert _demo_entries(tempfile.gettempdir()) <= shared_before, "the demo left a workdir in /tmp"

    rows = _table_rows(out)
    findings = " ".join(_squeezed(finding) for _, _, finding, _ in rows)
    for expected in (
        "N+1 queries: 25×",
        "Order.customer",
        "N+1 queries: 20× SELECT count(*) FROM items WHERE order_id = ?",
        "N+1 HTTP calls: 8× GET",
        "N+1 concurrent HTTP calls: 8× GET",
        "Slow query WITH RECURSIVE",
        "GET /products/search got slower: p95",
        *(f"fix: {fix}" for fix in DEMO_FIXES),  # in full: folded in its cell, never cut
    ):
        assert _squeezed(expected) in findings, f"{expected!r} missing from the demo's table:\n{out}"
    # One row per finding, with how often it was seen; start-up work is no endpoint.
    endpoints = [_squeezed(endpoint) for _, endpoint, _, _ in rows]
    assert set(endpoints) >= {_squeezed(each) for each in EXPECTED_FINDINGS | {"GET /products/search"}}, out
    assert not {"startup", "background"} & set(endpoints), out
    kinds = [
        (endpoint, _squeezed(finding)[:12])
        for endpoint, (_, _, finding, _) in zip(endpoints, rows, strict=True)
    ]
    assert len(kinds) == len(set(kinds)), f"a finding shown twice:\n{out}"
    assert all(re.search(r"×\d+", severity) for severity, _, _, _ in rows), out
    # The restart as 1.1.0: the trend monitor names the release that made search slower, once.
    trend = [finding for _, endpoint, finding, _ in rows if "gotslower" in _squeezed(finding)]
    assert len(trend) == 1 and "sinceversion1.1.0" in _squeezed(trend[0]), out
    quiet = out[out.index("Quiet, as they should be:") : out.index(YOUR_APP)]
    for endpoint in ("/orders/eager", "/orders/recent", "/dashboard", "/stock/batch", "/healthz"):
        assert endpoint in quiet
    assert out.rstrip().endswith(YOUR_APP), out
    # No collector runs: export errors stay in the app's log, out of the user's output.
    assert "StatusCode.UNAVAILABLE" not in out + result.stderr


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_demo_interrupted_leaves_nothing_behind(tmp_path: Path, how: str) -> None:
    """Ctrl+C (SIGINT to the demo and its shop) or SIGTERM (to the demo alone) while the shop runs:
    the shop is stopped, the working directory removed, one line said."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    temp = tmp_path / "tmp"
    temp.mkdir()
    demo = subprocess.Popen(
        [str(BIN / "otel-perf"), "demo"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "TMPDIR": str(temp)},
        start_new_session=True,  # its own process group: Ctrl+C reaches the demo and its shop
    )
    try:
        deadline = time.monotonic() + 60
        while not any((workdir / "demo-shop.db").exists() for workdir in temp.iterdir()):
            assert time.monotonic() < deadline and demo.poll() is None, "the demo's shop never started"
            time.sleep(0.1)
        time.sleep(1.0)  # serving traffic: the monitor's state and the alerts outbox exist too
        if how == "ctrl-c":
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.send_signal(signal.SIGTERM)
        _, stderr = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert os.listdir(temp) == [], "an interrupted demo left files behind"
    assert demo.returncode == 130 and stderr.strip() == "demo interrupted", (demo.returncode, stderr)
    time.sleep(0.5)
    try:
        os.killpg(demo.pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError("the demo's shop still runs after Ctrl+C")


def _alert(severity: str, occurrences: int = 1, **fields: Any) -> dict[str, Any]:
    return {
        "type": "n_plus_one",
        "severity": severity,
        "service": "shop",
        "operation": "GET /orders",
        "fingerprint": "1-orders",
        "title": "N+1 queries: 25× SELECT customers.id FROM customers WHERE customers.id = ? in GET /orders",
        "details": {
            "count": 25,
            "total_duration_ms": 3.5,
            "suggestion": "eager-load it: .options(selectinload(Order.customer_with_a_long_name)) "
            "or .options(joinedload(Order.customer_with_a_long_name)) on the query that loads them",
        },
        "occurrences": occurrences,
        **fields,
    }


def test_findings_table_shows_each_finding_once_with_its_fix_in_full() -> None:
    alerts = [
        _alert("low"),
        _alert("medium", occurrences=2, title="N+1 queries: 40× SELECT customers.id in GET /orders"),
        _alert("low"),
        _alert("high", fingerprint=None, type="slow_span", title="Slow query SELECT 1", details={"ratio": 3}),
        _alert(
            "low", fingerprint=None, type="slow_span", title="Slow query SELECT 1", details={"ratio": 1.1}
        ),
    ]
    fix = _squeezed(f"fix: {alerts[0]['details']['suggestion']}")
    for width in (80, 120):
        console = Console(width=width, file=io.StringIO(), color_system=None)
        console.print(findings_table(alerts))
        rows = _table_rows(console.file.getvalue())  # type: ignore[attr-defined]
        assert [(_squeezed(severity), _squeezed(finding)[:16]) for severity, _, finding, _ in rows] == [
            ("HIGH×2", "SlowquerySELECT1"),  # grouped by type, endpoint and statement without a fingerprint
            ("MEDIUM×4", "N+1queries:40×SE"),  # the worst sighting, every occurrence counted
        ], rows
        assert fix in _squeezed(rows[1][2]), (width, rows[1][2])


def test_demo_lists_start_up_work_apart_from_the_endpoints() -> None:
    """The shop seeding its database runs before any request: shown as start-up work, with its fix,
    never as an endpoint row."""
    seeding = _alert(
        "medium",
        operation="startup",
        fingerprint="1-seed",
        title="N+1 queries: 180× INSERT INTO items (order_id, sku, quantity) VALUES (?, ?, ?) in startup",
        details={"count": 180, "suggestion": "insert the rows in one executemany"},
    )
    console = Console(width=80, file=io.StringIO(), color_system=None)
    print_result(console, DemoResult([_alert("low"), seeding], ["/healthz"]))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert [_squeezed(endpoint) for _, endpoint, _, _ in _table_rows(out)] == ["GET/orders"], out
    start_up = _squeezed(out[out.index("Start-up work") : out.index("Quiet, as they should be:")])
    assert "INSERTINTOitems" in start_up and "fix:inserttherowsinoneexecutemany" in start_up, out
    assert out.rstrip().endswith(YOUR_APP), out


def test_demo_trend_survives_a_slow_baseline_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's trend settings and traffic (a model of it: `SEARCH_RATE` requests per window, a few
    ms each on 1.0.0, 200 ms more on 1.1.0) find 1.1.0's regression within a few windows wherever
    one baseline window was slowed by a busy machine, and a busy stretch of the baseline alone is
    no alert (it would hold the series and hide 1.1.0's)."""
    for name, value in COMPRESSED_TIME.items():
        monkeypatch.setenv(name, value)  # the demo's settings, as its shop reads them
    settings = TrendSettings()
    key = SeriesKey("otel-perf-demo", "GET /products/search")
    windows = int(BASELINE_S)
    rate = int(SEARCH_RATE)

    def window(index: int, version: str, durations: list[float]) -> Window:
        aggregate = Aggregate()
        for duration in durations:
            aggregate.add(version, duration, False)
        return Window(index * 10**9, (index + 1) * 10**9, aggregate.total, aggregate.versions)

    def baseline(rng: random.Random, slowed: range, stalled: int, by_ms: float) -> list[Window]:
        history = []
        for index in range(windows):
            durations = [rng.uniform(3, 9) for _ in range(rate)]
            if index in slowed:
                durations[:stalled] = [duration + by_ms for duration in durations[:stalled]]
            history.append(window(index, RELEASES[0], durations))
        return history

    for seed in range(3):
        rng = random.Random(seed)
        for slow in range(windows):
            history = baseline(rng, range(slow, slow + 1), stalled=rate // 10, by_ms=130)
            monitor = TrendMonitor(settings, window_s=1)
            found: list[Finding] = []
            for after in range(8):
                durations = [rng.uniform(3, 9) + 200 for _ in range(int(rate * 0.9))]
                history.append(window(windows + 3 + after, RELEASES[1], durations))
                found, _ = monitor.evaluate(key, history, None)
                if found:
                    break
            assert found and found[0].details["version"] == RELEASES[1], (seed, slow)
        # A busy stretch: every request 60 ms slower for three windows.
        history = baseline(rng, range(windows - 3, windows), stalled=rate, by_ms=60)
        assert all(
            not TrendMonitor(settings, window_s=1).evaluate(key, history[:end], None)[0]
            for end in range(1, windows + 1)
        )


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
    assert (
        "2.1.9 is installed, but the sqlalchemy instrumentation only supports sqlalchemy>=1.0.0,<2.1.0:"
        in log
    )
    assert "no database query will be traced" in log and "pip install 'sqlalchemy<2.1'" in log
    # Exactly what the warning says: no query spans, so the ORM N+1 goes unseen; HTTP still works.
    assert all(alert["operation"] != "GET /orders" for alert in app.settle())
    assert alerts
