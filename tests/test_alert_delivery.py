"""Alerts leave the app through the sinks, and a sink in trouble never hurts a request."""

from __future__ import annotations

import statistics
import time

import httpx

from tests.support.apps import free_port


def _orders_alert(alerts: list[dict]) -> bool:
    return any(alert["operation"] == "GET /orders" for alert in alerts)


def test_webhook_receives_slack_compatible_json(launch, recorder) -> None:
    app = launch("instrument", env={"OTEL_PERF_ALERTS_WEBHOOK_URL": recorder.url})
    app.get("/orders")
    app.wait_for_alerts(_orders_alert)
    from tests.support.apps import wait_until

    def orders_posts() -> list[dict]:
        return [each for each in recorder.requests if each["json"]["operation"] == "GET /orders"]

    # (On a loaded machine a slow start-up query may be alerted too: only the /orders alert matters.)
    wait_until(orders_posts, what="the webhook POST")
    (request,) = orders_posts()
    payload = request["json"]
    assert request["path"] == "/hooks/alerts"
    assert request["headers"]["Content-Type"] == "application/json"
    assert payload["text"].startswith("[LOW] N+1 queries: 25×")
    assert payload["type"] == "n_plus_one" and payload["operation"] == "GET /orders"
    assert payload["details"]["orm_relationship"] == "Order.customer"
    # The URL (which carries the secret token in real webhooks) is never logged.
    assert recorder.url not in app.log()


def _latency_ms(base_url: str, path: str, count: int) -> float:
    samples = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.get(path).raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def test_a_failing_webhook_breaks_no_request_and_no_other_sink(launch, recorder) -> None:
    recorder.status = 500
    recorder.delay_s = 2.0  # slow *and* failing: three attempts per alert
    app = launch(
        "instrument", env={"OTEL_PERF_ALERTS_WEBHOOK_URL": recorder.url, "OTEL_PERF_ALERTS_COOLDOWN_S": "0"}
    )
    # Every request succeeds while alerts pile up behind the failing webhook.
    for _ in range(10):
        app.get("/orders")
        app.get("/reports/order-lines")
    alerts = app.wait_for_alerts(lambda alerts: len(alerts) >= 2 and _orders_alert(alerts))
    assert {alert["operation"] for alert in alerts} >= {"GET /orders", "GET /reports/order-lines"}
    # Latency of a healthy endpoint is unaffected by the stuck delivery.
    assert _latency_ms(app.base_url, "/healthz", 30) < 50


def test_a_dead_webhook_and_a_dead_collector_break_no_request(launch) -> None:
    dead = free_port()
    app = launch(
        "instrument",
        env={"OTEL_PERF_ALERTS_WEBHOOK_URL": f"http://127.0.0.1:{dead}/hook"},
        export={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        },
    )
    for _ in range(5):
        app.get("/orders")
        app.get("/stock/sequential")
    alerts = app.wait_for_alerts(lambda alerts: len(alerts) >= 2)
    assert {alert["operation"] for alert in alerts} == {"GET /orders", "GET /stock/sequential"}
    assert _latency_ms(app.base_url, "/healthz", 20) < 50
    # A clean exit; the SDK's exporters spend their own timeouts on the dead collector first.
    app.stop(timeout=40)
    assert app.process.returncode == 0, app.log()[-3000:]
    assert "webhook unreachable" in app.log()


def test_unwritable_alerts_file_is_reported_and_the_app_runs(launch, tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    app = launch(
        "instrument",
        env={"OTEL_PERF_ALERTS_FILE": str(blocker / "alerts.jsonl"), "OTEL_PERF_ALERTS_CONSOLE": "true"},
    )
    app.get("/orders")
    from tests.support.apps import wait_until

    wait_until(lambda: "otel-perf LOW N+1 queries: 25×" in app.log(), what="the console sink line")
    assert "OTEL_PERF_ALERTS_FILE=" in app.log() and "file sink off" in app.log()


def test_the_webhook_url_never_leaves_in_exported_spans_or_logs(launch, recorder) -> None:
    """The webhook URL carries its token (Slack, Teams): the sink's own POST must not be traced by the
    app's HTTP-client instrumentation (it would be exported as url.full) nor logged."""
    secret = "xoxbTOKEN4d9Qz7SecretPart"
    hook = f"{recorder.url}/{secret}"
    app = launch(
        "instrument",
        env={"OTEL_PERF_ALERTS_WEBHOOK_URL": hook},
        export={
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "console",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
        },
    )
    app.get("/orders")
    app.get("/stock/sequential")  # the app's own httpx calls are traced and exported
    from tests.support.apps import wait_until

    wait_until(lambda: recorder.requests, what="the webhook POST")
    assert recorder.requests[0]["path"].endswith(secret)
    wait_until(lambda: '"name": "perf.alert"' in app.log(), what="the alert span exported")
    wait_until(lambda: "/inventory/" in app.log(), what="the app's own HTTP client spans exported")
    app.stop()
    assert secret not in app.log()


def test_alerts_owed_to_a_dead_webhook_survive_sigkill_and_arrive_once(launch, recorder, tmp_path) -> None:
    """The webhook is down while the app raises alerts; the app is killed (SIGKILL) before it could
    deliver them; the webhook comes back and the app restarts on the same outbox: every alert
    reaches the webhook, once per fingerprint (4 alerts raised while a webhook was down for 18 s
    used to be lost), and the file sink never waited for the webhook."""
    from tests.support.apps import wait_until

    outbox = tmp_path / "alerts-outbox.sqlite3"
    env = {"OTEL_PERF_ALERTS_WEBHOOK_URL": recorder.url, "OTEL_PERF_ALERTS_OUTBOX_PATH": str(outbox)}
    recorder.status = 503
    first = launch("instrument", env=env)
    first.get("/orders")
    first.get("/reports/order-lines")
    raised = first.wait_for_alerts(lambda alerts: {a["operation"] for a in alerts} >= _TWO_OPERATIONS)
    fingerprints = {alert["fingerprint"] for alert in raised}
    wait_until(lambda: len(recorder.requests) >= len(fingerprints), what="the webhook refusing them")
    first.process.kill()  # SIGKILL: no shutdown, no flush
    first.process.wait(10)
    recorder.status = 200
    refused = len(recorder.requests)

    second = launch("instrument", env=env)
    second.get("/orders")  # raised again by the new process, in the same cooldown window

    def accepted() -> list[str]:
        return [each["json"]["fingerprint"] for each in recorder.requests[refused:]]

    wait_until(lambda: set(accepted()) >= fingerprints, timeout=40, what="the owed alerts delivered")
    time.sleep(2)  # room for a duplicate to show up
    assert sorted(accepted()) == sorted(set(accepted())), f"delivered twice: {accepted()}"
    keys = [each["headers"].get("Idempotency-Key") for each in recorder.requests[refused:]]
    assert all(keys) and len(set(keys)) == len(keys)


_TWO_OPERATIONS = {"GET /orders", "GET /reports/order-lines"}
