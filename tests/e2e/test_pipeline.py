"""The pipeline, all real processes on loopback: app → collector → analyzer → collector → Jaeger,
Alertmanager and the alert log (issue: collector pipeline, end-to-end)."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.support.apps import RunningApp, drive_shop, wait_until
from tests.support.stack import RunningStack, span_tags

CATALOG_APP = Path(__file__).resolve().parents[1] / "apps" / "catalog.py"


def _shop(launch, stack: RunningStack, service: str, **env: str) -> RunningApp:
    return launch("instrument", env={"OTEL_SERVICE_NAME": service, **env}, export=stack.app_export_env())


def test_findings_reach_jaeger_alertmanager_and_the_alert_log(launch, stack: RunningStack) -> None:
    service = "shop-e2e"
    app = _shop(launch, stack, service)
    drive_shop(
        app, ["/orders", "/orders", "/reports/order-lines", "/stock/sequential", "/orders/eager", "/healthz"]
    )
    app.wait_for_alerts(lambda alerts: len(alerts) == 3)

    # Jaeger: the N+1 trace is searchable by tag, with the alert span inside it.
    def n_plus_one_trace() -> dict | None:
        for trace in stack.jaeger_traces(service, {"perf.issue": "n_plus_one"}):
            names = {span["operationName"] for span in trace["spans"]}
            if "GET /orders" in names and "perf.alert" in names:
                return trace
        return None

    trace = wait_until(n_plus_one_trace, timeout=30, what="the N+1 trace with its perf.alert span in Jaeger")
    flagged = [
        span
        for span in trace["spans"]
        if span_tags(span).get("perf.issue") == "n_plus_one" and span["operationName"] != "perf.alert"
    ]
    assert len(flagged) == 25
    assert {span_tags(span)["perf.orm.lazy_load"] for span in flagged} == {"Order.customer"}
    alert_span = next(span for span in trace["spans"] if span["operationName"] == "perf.alert")
    root = next(span for span in trace["spans"] if span["operationName"] == "GET /orders")
    assert alert_span["references"][0]["spanID"] == root["spanID"]
    assert alert_span["logs"], "the alert span carries its event"

    # Alertmanager: one alert per finding; /orders was requested twice and still has one.
    def three_alerts() -> list | None:
        alerts = stack.alertmanager_alerts(service)
        return alerts if len(alerts) >= 3 else None

    alerts = wait_until(three_alerts, timeout=30, what="three alerts in Alertmanager")
    time.sleep(2)  # a late duplicate would show up now
    alerts = stack.alertmanager_alerts(service)
    names = sorted(alert["labels"]["event_name"] for alert in alerts)
    assert len(names) == 3 == len(set(names)), names
    assert next(name for name in names if "GET /orders:" in name).startswith(
        "n_plus_one GET /orders: SELECT customers"
    )
    orders_alert = next(alert for alert in alerts if "GET /orders:" in alert["labels"]["event_name"])
    assert orders_alert["labels"]["severity"] == "low"
    assert orders_alert["annotations"]["details.orm_relationship"] == "Order.customer"
    assert orders_alert["annotations"]["TraceID"] == root["traceID"]
    assert orders_alert["generatorURL"].startswith(f"http://127.0.0.1:{stack.ports.jaeger_query}")

    # The collector's file exporter has the alert log records.
    records = wait_until(
        lambda: stack.alert_records(service) if len(stack.alert_records(service)) >= 3 else None,
        timeout=20,
        what="alert records in the collector's file exporter",
    )
    assert {record["perf.issue"] for record in records} == {"n_plus_one"}
    assert any(record["body"].startswith("N+1 queries: 25×") for record in records)


def test_an_exception_event_never_becomes_an_alert(stack: RunningStack) -> None:
    service = "plain-errors"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{stack.ports.otlp_grpc}", insecure=True))
    )
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /explode") as span:
        span.record_exception(ValueError("boom"))
        span.add_event("cache miss", {"key": "user:1"})
    provider.shutdown()
    # It went all the way through the pipeline (Jaeger has it) ...
    wait_until(lambda: stack.jaeger_traces(service), timeout=30, what="the exception trace in Jaeger")
    time.sleep(2)
    # ... and no event of it became an alert.
    assert stack.alertmanager_alerts(service) == []
    assert not [
        alert for alert in stack.alertmanager_alerts() if "boom" in str(alert) or "cache miss" in str(alert)
    ]


def _start_catalog_pair(launch, stack: RunningStack, tmp_path: Path, mode: str = "both") -> RunningApp:
    catalog_dir, basket_dir = tmp_path / "catalog", tmp_path / "basket"
    for directory in (catalog_dir, basket_dir):
        directory.mkdir()
        shutil.copy(CATALOG_APP, directory / "catalog.py")
    common = {"OTEL_PERF_MODE": mode, **stack.app_export_env()}
    catalog = launch(
        "instrument",
        workdir=catalog_dir,
        seed=False,
        command=[sys.executable, "catalog.py"],
        env={"ROLE": "catalog", "OTEL_SERVICE_NAME": "catalog"},
        export=common,
    )
    return launch(
        "instrument",
        workdir=basket_dir,
        seed=False,
        command=[sys.executable, "catalog.py"],
        env={"ROLE": "basket", "OTEL_SERVICE_NAME": "basket", "CATALOG_URL": catalog.base_url},
        export=common,
    )


def test_cross_service_n_plus_one_is_found_only_collector_side_and_reported_once(
    launch, stack: RunningStack, tmp_path: Path
) -> None:
    basket = _start_catalog_pair(launch, stack, tmp_path)
    for _ in range(3):
        basket.get("/basket")

    def found() -> list | None:
        alerts = [alert for alert in stack.analyzer_alerts() if alert["operation"] == "GET /basket"]
        return alerts or None

    (alert,) = wait_until(found, timeout=30, what="the analyzer's cross-service finding")
    details = alert["details"]
    assert alert["type"] == "n_plus_one" and alert["service"] == "basket" and alert["source"] == "collector"
    assert details["kind"] == "http" and details["count"] == 7
    assert details["url_template"].endswith("/items/by-name/{name}")
    assert details["downstream"] == [
        {"service": "catalog", "statement": "SELECT price FROM items WHERE name = ?", "count": 7}
    ]
    # Neither service could see it in-process.
    time.sleep(1)
    assert basket.alerts() == []
    assert [alert for alert in stack.alertmanager_alerts("catalog")] == []
    # Reported once, although three requests showed it.
    wait_until(lambda: stack.alertmanager_alerts("basket"), timeout=30, what="the Alertmanager alert")
    time.sleep(2)
    assert len(stack.alertmanager_alerts("basket")) == 1
    assert len([a for a in stack.analyzer_alerts() if a["operation"] == "GET /basket"]) == 1


def test_two_analyzer_replicas_analyse_every_trace_exactly_once(launch, fresh_stack) -> None:
    stack = fresh_stack(analyzers=2)
    service = "shop-replicas"
    app = _shop(launch, stack, service, OTEL_PERF_MODE="collector")
    requests = 12
    for _ in range(requests):
        app.get("/orders")
        app.get("/reports/order-lines")

    def all_findings() -> float | None:
        total = sum(stack.analyzer_metric(index, "otel_perf_analyzer_findings") for index in range(2))
        return total if total >= 2 * requests else None

    total = wait_until(all_findings, timeout=40, what="every request's finding from the analyzers")
    time.sleep(3)
    per_replica = [stack.analyzer_metric(index, "otel_perf_analyzer_traces_analysed") for index in range(2)]
    assert all(count > 0 for count in per_replica), f"one replica got nothing: {per_replica}"
    # One finding per N+1 request: no trace was analysed twice (or split between replicas).
    assert (
        sum(stack.analyzer_metric(index, "otel_perf_analyzer_findings") for index in range(2))
        == total
        == 2 * requests
    )
    assert sum(per_replica) == len(stack.jaeger_traces(service, limit=2000))
    # No duplicate alerts: one per finding in Alertmanager, although both replicas saw both.
    wait_until(lambda: len(stack.alertmanager_alerts(service)) >= 2, timeout=30, what="alerts")
    time.sleep(2)
    names = [alert["labels"]["event_name"] for alert in stack.alertmanager_alerts(service)]
    assert len(names) == 2 == len(set(names))


def test_collector_restart_mid_traffic(launch, fresh_stack) -> None:
    stack = fresh_stack()
    service = "shop-restart"
    app = _shop(launch, stack, service)
    failures: list[str] = []
    latencies: list[float] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=app.base_url, timeout=10) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    client.get("/customers/3").raise_for_status()
                except httpx.HTTPError as error:
                    failures.append(repr(error))
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_until(lambda: stack.jaeger_traces(service), timeout=30, what="traffic in Jaeger")
        stack.stack.stop_service("collector")
        down_since = len(latencies)
        time.sleep(3)
        served_while_down = len(latencies) - down_since
        stack.stack.start_service("collector")
        restarted_ns = time.time_ns()
        app.get("/orders")

        def after_restart() -> bool:
            traces = stack.jaeger_traces(service, {"perf.issue": "n_plus_one"})
            return any(
                min(span["startTime"] for span in trace["spans"]) * 1000 > restarted_ns for trace in traces
            )

        wait_until(after_restart, timeout=40, what="a trace sent after the restart in Jaeger")
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert served_while_down > 20, "the app kept serving while the collector was down"
    assert sorted(latencies)[len(latencies) // 2] < 0.05
