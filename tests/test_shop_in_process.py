"""The README's promise, end to end: a real FastAPI + SQLAlchemy app served by uvicorn, launched
the two ways users launch it, driven with real requests; the alerts it writes are read back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.apps import SHOP_TRAFFIC, SITECUSTOMIZE_DIR, by_operation, drive_shop

EXPECTED = {
    "GET /orders",
    "GET /reports/order-lines",
    "GET /stock/sequential",
    "GET /stock/parallel",
    "GET /reports/revenue",
}
QUIET = {
    "GET /healthz",
    "GET /orders/eager",
    "GET /orders/recent",
    "GET /dashboard",
    "GET /customers/{customer_id}",
    "GET /stock/batch",
}
CONTRACT_FIELDS = {
    "type",
    "severity",
    "service",
    "operation",
    "trace_id",
    "span_ids",
    "fingerprint",
    "title",
    "details",
}


def _expected_arrived(alerts: list[dict]) -> bool:
    return {alert["operation"] for alert in alerts} >= EXPECTED


def assert_shop_findings(alerts: list[dict], db_system: str = "sqlite") -> None:
    operations = {alert["operation"] for alert in alerts}
    assert not operations & QUIET, f"healthy endpoints were reported: {operations & QUIET}"
    for alert in alerts:
        assert alert.keys() >= CONTRACT_FIELDS
        assert re.fullmatch(r"[0-9a-f]{32}", alert["trace_id"])
        assert alert["service"] == "shop"
        assert alert["severity"] in {"low", "medium", "high", "critical"}

    n_plus_one = by_operation(alerts, "n_plus_one")
    lazy = n_plus_one["GET /orders"]["details"]
    assert lazy["kind"] == "db" and lazy["count"] == 25 and lazy["db_system"] == db_system
    assert (
        lazy["statement"].startswith("SELECT customers.id")
        and lazy["statement"].endswith("WHERE customers.id = ?")
    ) or "customers.id = %(pk_1)s" not in lazy["statement"]
    assert lazy["orm_relationship"] == "Order.customer"
    assert "selectinload(Order.customer)" in lazy["suggestion"]
    assert lazy["code_location"]["file"].endswith("main.py")
    assert lazy["code_location"]["function"].startswith("list_orders")
    assert lazy["parent_span"] == "GET /orders" and lazy["total_duration_ms"] > 0
    # Fast local database: the pattern is found, its impact rates it low (unless a loaded machine
    # made the 25 queries take 50 ms or more in all: then medium or more, by the same rule).
    if db_system == "sqlite":
        total = lazy["total_duration_ms"]
        expected = "low" if total < 50 else "medium" if total < 250 else "high"
        assert n_plus_one["GET /orders"]["severity"] == expected, total

    raw = n_plus_one["GET /reports/order-lines"]["details"]
    assert raw["statement"] == "SELECT count(*) FROM items WHERE order_id = ?"
    assert raw["count"] == 20 and raw["code_location"]["function"] == "order_lines_report"

    http = n_plus_one["GET /stock/sequential"]["details"]
    assert http["kind"] == "http" and http["count"] == 8 and http["method"] == "GET"
    assert http["url_template"].endswith("/inventory/{id}")
    assert http["concurrent"] is False
    burst = n_plus_one["GET /stock/parallel"]["details"]
    assert burst["kind"] == "http" and burst["count"] == 8 and burst["concurrent"] is True
    assert "batch endpoint" in burst["suggestion"]

    slow = by_operation(alerts, "slow_span")["GET /reports/revenue"]["details"]
    assert slow["statement"].startswith("WITH RECURSIVE series(n) AS (SELECT ? UNION ALL")
    assert slow["duration_ms"] > slow["threshold_ms"] == 100


def assert_no_literals(text: str) -> None:
    for literal in ("order_id = 1", "order_id = 20", "1500000", "@example.com", "SKU-00", "% 97"):
        assert literal not in text, f"literal {literal!r} leaked into an alert"


@pytest.mark.parametrize("mode", ["instrument", "sitecustomize"])
def test_shop_findings_in_both_launch_modes(launch, mode: str) -> None:
    app = launch(mode)
    drive_shop(app, rounds=2)
    app.wait_for_alerts(_expected_arrived)
    alerts = app.settle()
    assert_shop_findings(alerts)
    assert_no_literals(app.alerts_file.read_text())
    # Two rounds of traffic, one alert per finding: the repeat is inside the cooldown.
    fingerprints = [alert["fingerprint"] for alert in alerts]
    assert len(fingerprints) == len(set(fingerprints))
    # (On a loaded machine the whole revenue request may pass 500 ms too: a fifth, genuine finding.)
    request_level = [alert for alert in alerts if alert["details"].get("span_kind") == "server"]
    assert len(fingerprints) - len(request_level) == len(EXPECTED)


def test_shop_on_postgresql(launch, postgres) -> None:
    app = launch("instrument", env={"DATABASE_URL": postgres.url})
    drive_shop(app)
    app.wait_for_alerts(_expected_arrived)
    alerts = app.settle()
    assert_shop_findings(alerts, db_system="postgresql")
    assert_no_literals(app.alerts_file.read_text())


def test_flagged_spans_reach_the_exporter_with_perf_attributes(launch) -> None:
    """What leaves the process: the console exporter prints every exported span."""
    app = launch(
        "instrument",
        export={
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    app.get("/orders")
    app.wait_for_alerts(lambda alerts: any(alert["operation"] == "GET /orders" for alert in alerts))
    fingerprint = app.alerts()[0]["fingerprint"]

    def exported() -> list[dict]:
        decoder, text, spans, index = json.JSONDecoder(), app.log(), [], 0
        while (start := text.find("{", index)) != -1:
            try:
                obj, index = decoder.raw_decode(text, start)
            except ValueError:
                index = start + 1
                continue
            if isinstance(obj, dict) and "context" in obj:
                spans.append(obj)
        return spans

    def flagged_and_alert_span() -> tuple[list[dict], list[dict]] | None:
        spans = exported()
        flagged = [
            span
            for span in spans
            if span["attributes"].get("perf.issue") == "n_plus_one" and span["name"] != "perf.alert"
        ]
        alert_spans = [span for span in spans if span["name"] == "perf.alert"]
        return (flagged, alert_spans) if len(flagged) == 25 and alert_spans else None

    from tests.support.apps import wait_until

    flagged, alert_spans = wait_until(flagged_and_alert_span, what="annotated spans in the exporter output")
    assert {span["attributes"]["perf.issue.fingerprint"] for span in flagged} == {fingerprint}
    assert all(span["attributes"]["perf.orm.lazy_load"] == "Order.customer" for span in flagged)
    root = next(span for span in exported() if span["name"] == "GET /orders" and span["parent_id"] is None)
    alert_span = alert_spans[0]
    assert alert_span["parent_id"] == root["context"]["span_id"]
    assert alert_span["context"]["trace_id"] == root["context"]["trace_id"]
    (event,) = alert_span["events"]
    assert event["attributes"]["perf.issue"] == "n_plus_one"
    assert event["attributes"]["perf.severity"] == "low"
    assert event["name"].startswith("n_plus_one GET /orders: ")


def test_sitecustomize_chains_to_the_existing_one_and_serves_uvicorn_workers(launch, tmp_path: Path) -> None:
    other = tmp_path / "theirs"
    other.mkdir()
    marker = tmp_path / "their-sitecustomize-ran"
    (other / "sitecustomize.py").write_text(
        f"import os\nopen({str(marker)!r} + '.' + str(os.getpid()), 'w').close()\n"
    )
    app = launch(
        "sitecustomize",
        env={"PYTHONPATH": str(other)},
        command=[
            sys.executable,
            "-m",
            "uvicorn",
            "main:app",
            "--workers",
            "2",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
    )
    for _ in range(6):
        app.get("/orders")
    alerts = app.wait_for_alerts(lambda alerts: any(alert["operation"] == "GET /orders" for alert in alerts))
    assert alerts[0]["details"]["orm_relationship"] == "Order.customer"
    # Theirs ran in the supervisor and in each worker process.
    assert len(list(tmp_path.glob("their-sitecustomize-ran.*"))) >= 3
    assert "Traceback" not in app.log()


def test_sitecustomize_under_uvicorn_reload(launch) -> None:
    app = launch(
        "sitecustomize",
        command=[
            sys.executable,
            "-m",
            "uvicorn",
            "main:app",
            "--reload",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ],
    )
    app.get("/reports/order-lines")
    app.wait_for_alerts(
        lambda alerts: any(alert["operation"] == "GET /reports/order-lines" for alert in alerts)
    )


def test_sitecustomize_command_prints_the_drop_in_directory() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "otel-perf"), "sitecustomize"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == SITECUSTOMIZE_DIR
    assert (Path(out) / "sitecustomize.py").is_file()


def test_kill_switch_leaves_plain_opentelemetry(launch) -> None:
    app = launch("instrument", env={"OTEL_PERF_ENABLED": "false"})
    drive_shop(app)
    assert app.settle(1.5) == []


def test_a_bad_setting_is_named_and_the_app_still_runs(launch) -> None:
    app = launch(
        "instrument",
        env={"OTEL_PERF_N_PLUS_ONE_MIN_REPEATS": "many", "OTEL_PERF_SLOW_SPAN_OVERRIDES": "{not json"},
    )
    app.get("/orders")
    app.wait_for_alerts(lambda alerts: any(alert["operation"] == "GET /orders" for alert in alerts))
    log = app.log()
    assert "OTEL_PERF_N_PLUS_ONE_MIN_REPEATS='many' is invalid" in log
    assert "OTEL_PERF_SLOW_SPAN_OVERRIDES" in log
    assert "Traceback" not in log


def test_shop_traffic_list_covers_every_route() -> None:
    """Guards the true-negative assertions: every endpoint of the shop is exercised."""
    from otel_perf.demo.app import app

    routes = {route.path for route in app.routes if getattr(route, "methods", None)} - {
        "/docs",
        "/redoc",
        "/openapi.json",
        "/docs/oauth2-redirect",
    }
    requested = {
        path if not path.startswith("/customers/") else "/customers/{customer_id}" for path in SHOP_TRAFFIC
    }
    assert routes - {"/inventory/{sku}", "/inventory"} == requested


SHOP_ROUTES = {f"GET {path}" for path in ("/orders", "/reports/order-lines", "/reports/revenue")} | {
    "GET /stock/sequential",
    "GET /stock/parallel",
    "GET /stock/batch",
    "GET /inventory/{sku}",
    "GET /inventory",
}


def test_an_app_calling_itself_gets_no_alert_for_a_fragment_of_a_trace(launch) -> None:
    """The shop calls its own /inventory/{sku}. With the CPU share nearly spent, most requests are
    skipped; a skipped request's inner calls must not be analysed as a trace of their own, filed
    under a missing parent or a client span."""
    app = launch(
        "instrument", env={"OTEL_PERF_ANALYSIS_CPU_SHARE": "0.0005", "OTEL_PERF_ALERTS_COOLDOWN_S": "0"}
    )
    for _ in range(12):
        app.get("/stock/sequential")
        app.get("/stock/parallel")
    app.wait_for_alerts(lambda alerts: any(alert["operation"] == "GET /stock/sequential" for alert in alerts))
    alerts = app.settle(1.5)
    operations = {alert["operation"] for alert in alerts}
    assert operations <= SHOP_ROUTES, operations
