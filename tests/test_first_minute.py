"""The first minute of a new user: their own FastAPI app under `opentelemetry-instrument python
main.py`, otel-perf installed, the defaults, and no collector running.

They see one line saying otel-perf is on, what it analyses and where alerts go; one line saying no
collector answers (and how to fix it), not the exporters' retry lines; the N+1 they just caused on
the console, with what to act on; and Ctrl+C or SIGTERM ends the app at once. With a collector, the
exit is as prompt and the collector gets every span. Real processes: uvicorn, the collector binary.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from otel_perf.alerting.alert import Alert
from otel_perf.alerting.router import AlertRouter
from otel_perf.alerting.sinks import SinkSettings, build_sinks
from otel_perf.processors.findings import Finding, Severity
from tests.support.apps import RunningApp, free_port, start_app, wait_until
from tests.support.file_collector import FileCollector
from tests.support.recorder import Recorder

# A user's app: SQLAlchemy on SQLite, one query per order (the N+1), and a route making a known
# number of spans (to count what the collector got). `[orders]`: SQLite's bracket-quoted name, which
# a markup-interpreting console would eat.
APP_SOURCE = """
import os

import uvicorn
from fastapi import FastAPI
from opentelemetry import trace
from sqlalchemy import create_engine, text

app = FastAPI()
engine = create_engine("sqlite:///./shop.db")
tracer = trace.get_tracer("first-minute")

with engine.begin() as connection:
    connection.execute(text("CREATE TABLE IF NOT EXISTS [orders] (id INTEGER PRIMARY KEY, total INTEGER)"))
    if not connection.execute(text("SELECT count(*) FROM [orders]")).scalar():
        for number in range(12):
            connection.execute(text("INSERT INTO [orders] VALUES (:id, :id)"), {"id": number})


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@app.get("/orders")
def orders() -> dict:
    with engine.connect() as connection:
        ids = [row[0] for row in connection.execute(text("SELECT id FROM [orders]"))]
        totals = [
            connection.execute(text("SELECT total FROM [orders] WHERE id = :id"), {"id": order}).scalar()
            for order in ids
        ]
    return {"n": len(totals)}


@app.get("/lines")
def lines() -> dict:
    with engine.connect() as connection:
        found = [
            connection.execute(text("SELECT id FROM [orders] WHERE total = :t"), {"t": total}).scalar()
            for total in range(12)
        ]
    return {"n": len(found)}


@app.get("/spans/{n}")
def spans(n: int) -> dict:
    for _ in range(n):
        with tracer.start_as_current_span("step"):
            pass
    return {"trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x")}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]))
"""

STARTUP = re.compile(r"otel-perf \S+ on \(pid (\d+), mode (\w+)\): (.*)")
NO_COLLECTOR = "no OpenTelemetry collector answers at"
EXPORTER_NOISE = ("Transient error", "Failed to export", "StatusCode.UNAVAILABLE", "retrying in")
TRACE_URL = "http://localhost:16686/trace/{trace_id}"
EXIT_S = 3.0
CONSOLE_ALERT = re.compile(r"otel-perf (LOW|MEDIUM|HIGH|CRITICAL) N\+1")


class Collector(FileCollector):
    """The real collector on `port`, taking all three signals; counts spans by trace id."""

    def spans(self) -> Counter[str]:
        """Spans received, by trace id (otel-perf's own alert spans not counted)."""
        spans, _ = self.all_spans()
        return Counter(span["traceId"] for span in spans if span.get("name") != "perf.alert")

    def alert_operations(self) -> list[str]:
        """The operations of the `perf.alert` spans received (otel-perf's OTLP alerts)."""
        operations = []
        for span in self.all_spans()[0]:
            if span.get("name") == "perf.alert":
                for event in span.get("events", ()):
                    for attribute in event.get("attributes", ()):
                        if attribute["key"] == "operation":
                            operations.append(attribute["value"]["stringValue"])
        return operations


def _start(workdir: Path, port: int, **env: str) -> RunningApp:
    """The app as a user starts it: `opentelemetry-instrument python main.py`, no OTEL_* setting but
    the endpoint (a port of ours: a collector a developer runs on 4317 must not change the test)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "main.py").write_text(APP_SOURCE)
    return start_app(
        workdir,
        "instrument",
        seed=False,
        export={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"},
        env={"OTEL_PERF_ALERTS_FILE": "", **env},  # blank: unset (start_app sets one)
    )


def _stop(app: RunningApp, signum: int) -> float:
    """Seconds from the signal to the process's end (the app is killed past 15 s)."""
    started = time.monotonic()
    os.kill(app.process.pid, signum)
    try:
        app.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        app.stop()
    return time.monotonic() - started


def _ended_by(app: RunningApp, signum: int) -> bool:
    """Exited normally, or by the signal itself: uvicorn re-raises the signal it stopped on once it
    has shut down (then SIGTERM's default action ends the process before `atexit`: plain
    OpenTelemetry's final flush does not run either, with or without otel-perf)."""
    return app.process.returncode in (0, -signum)


def _startup_lines(app: RunningApp) -> list[re.Match[str]]:
    return [match for line in app.log().splitlines() if (match := STARTUP.search(line))]


def _console_alert(log: str, headline: str) -> list[str]:
    """The console alert whose first line contains `headline`: that line and its indented ones."""
    lines = log.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("otel-perf ") and headline in line:
            block = [line]
            for following in lines[index + 1 :]:
                if not following.startswith("  "):
                    break
                block.append(following)
            return block
    raise AssertionError(f"no console alert with {headline!r} in:\n{log[-4000:]}")


def _traffic(app: RunningApp, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.get("/orders")
        app.get("/spans/5")
        time.sleep(0.2)


def test_without_a_collector_one_line_each_the_alert_on_the_console_and_a_prompt_exit(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there until the collector comes back below
    app = _start(tmp_path / "app", port, OTEL_PERF_TRACE_URL=TRACE_URL)
    collector = None
    try:
        _traffic(app, 8.0)
        log = app.log()
        [startup] = _startup_lines(app)
        assert int(startup.group(1)) == app.process.pid and startup.group(2) == "both", startup.group(0)
        assert "n_plus_one" in startup.group(3) and "slow_span" in startup.group(3)
        assert (
            f"alerts to the collector at 127.0.0.1:{port} (OTLP), console while no collector answers"
            in startup.group(3)
        )
        assert log.count(NO_COLLECTOR) == 1, log[-4000:]
        [notice] = [line for line in log.splitlines() if NO_COLLECTOR in line]
        assert f"127.0.0.1:{port}" in notice and "otel-perf rig up" in notice
        assert "OTEL_TRACES_EXPORTER=none" in notice and "OTEL_EXPORTER_OTLP_ENDPOINT" in notice
        assert not [noise for noise in EXPORTER_NOISE if noise in log], log[-4000:]
        # The N+1, on the console with what a person acts on; `[orders]` as written.
        alert = _console_alert(log, "N+1 queries: 12× SELECT total FROM [orders] WHERE id = ?")
        # (the severity follows the time the loop took: LOW here, MEDIUM on a loaded machine)
        assert re.match(r"otel-perf (LOW|MEDIUM) ", alert[0]) and "in GET /orders" in alert[0], alert
        assert re.fullmatch(
            r"  at main\.py:\d+ in orders\.<locals>\.<listcomp>|  at main\.py:\d+ in orders", alert[1]
        )
        assert any(line.startswith("  fix: ") for line in alert), alert
        assert any(
            re.fullmatch(r"  trace: http://localhost:16686/trace/[0-9a-f]{32}", line) for line in alert
        )

        # The collector comes back: said once; exports resume; alerts go to it, not the console.
        collector = Collector(tmp_path / "collector", port)

        def back() -> bool:
            app.get("/spans/1")
            return "answers again" in app.log()

        wait_until(back, timeout=30, interval=0.5, what="the collector-is-back line")
        trace_ids = [app.get(f"/spans/{n}").json()["trace_id"] for n in (40, 300)]
        app.get("/lines")  # another N+1: its alert goes to the collector only
        time.sleep(1.0)  # past the trace's grace: analysed and alerted before the signal
        assert _stop(app, signal.SIGINT) < EXIT_S, app.log()[-4000:]
        log = app.log()
        assert _ended_by(app, signal.SIGINT) and "Traceback" not in log, log[-4000:]
        assert log.count("answers again") == 1 and log.count(NO_COLLECTOR) == 1, log[-4000:]
        assert not [line for line in log.splitlines() if line.startswith("otel-perf ") and "/lines" in line]
        # Spans ended after the collector came back, flushed at exit: every one arrived, and the
        # alert span of the new N+1.
        wait_until(
            lambda: collector.spans()[trace_ids[0]] > 40 and collector.spans()[trace_ids[1]] > 300,
            timeout=10,
            what="the spans flushed at exit",
        )
        time.sleep(0.5)  # nothing more comes
        counts = collector.spans()
        per_request = counts[trace_ids[0]] - 40
        assert 1 <= per_request <= 5 and counts[trace_ids[1]] == 300 + per_request, counts
        assert "GET /lines" in collector.alert_operations()
    finally:
        app.stop()
        if collector is not None:
            collector.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_without_a_collector_the_app_exits_at_once(tmp_path: Path, signum: int) -> None:
    app = _start(tmp_path / "app", free_port())
    try:
        for _ in range(5):  # spans in the exporter's queue at the signal
            app.get("/orders")
            app.get("/spans/50")
        time.sleep(1.0)  # the exporter retrying
        took = _stop(app, signum)
        assert took < EXIT_S, f"{took:.1f} s\n{app.log()[-4000:]}"
        log = app.log()
        assert _ended_by(app, signum) and "Traceback" not in log, log[-4000:]
        assert len(_startup_lines(app)) == 1 and log.count(NO_COLLECTOR) == 1, log[-4000:]
        assert not [noise for noise in EXPORTER_NOISE if noise in log], log[-4000:]
    finally:
        app.stop()


def test_with_a_collector_the_exit_is_prompt_and_every_span_arrives(tmp_path: Path) -> None:
    port = free_port()
    collector = Collector(tmp_path / "collector", port)
    app = _start(tmp_path / "app", port)
    try:
        # One request measures the spans the instrumentation adds to a request.
        probe = app.get("/spans/1").json()["trace_id"]
        per_request = wait_until(lambda: collector.spans()[probe], timeout=15, what="the first trace") - 1
        time.sleep(0.5)
        assert collector.spans()[probe] == per_request + 1
        sizes = [30, 200, 700]
        trace_ids = [app.get(f"/spans/{n}").json()["trace_id"] for n in sizes]
        app.get("/orders")
        # At once: the spans are still in the exporter's queue (its schedule is 5 s).
        assert _stop(app, signal.SIGINT) < EXIT_S, app.log()[-4000:]
        log = app.log()
        assert _ended_by(app, signal.SIGINT) and "Traceback" not in log, log[-4000:]
        [startup] = _startup_lines(app)
        assert (
            f"alerts to the collector at 127.0.0.1:{port} (OTLP), console while no collector answers"
            in startup.group(3)
        )
        # A collector answers: no notice, and alerts go to it, not the console.
        assert NO_COLLECTOR not in log and not CONSOLE_ALERT.search(log), log[-4000:]
        expected = [n + per_request for n in sizes]
        wait_until(
            lambda: [collector.spans()[t] for t in trace_ids] == expected,
            timeout=10,
            what=f"{expected} spans",
        )
        time.sleep(0.5)  # nothing more comes
        assert [collector.spans()[t] for t in trace_ids] == expected
    finally:
        app.stop()
        collector.stop()


def test_uvicorn_workers_say_it_once_per_process(tmp_path: Path) -> None:
    """`uvicorn --workers 2`: the supervisor and each worker say it once, by pid (multiprocessing's
    helper process, which inherits the launcher's start-up too, says nothing)."""
    workdir = tmp_path / "app"
    workdir.mkdir()
    (workdir / "main.py").write_text(APP_SOURCE)
    app = start_app(
        workdir,
        "instrument",
        seed=False,
        command=[sys.executable, "-m", "uvicorn", "main:app", "--port", "{port}", "--workers", "2"],
        export={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
        env={"OTEL_PERF_ALERTS_FILE": ""},
    )
    try:
        for _ in range(4):
            app.get("/orders")
        wait_until(lambda: CONSOLE_ALERT.search(app.log()), what="the alert on the console")
        took = _stop(app, signal.SIGINT)
        assert took < EXIT_S, f"{took:.1f} s\n{app.log()[-4000:]}"
        pids = [int(match.group(1)) for match in _startup_lines(app)]
        assert len(pids) == 3 and len(set(pids)) == 3 and app.process.pid in pids, app.log()[-4000:]
        assert app.log().count(NO_COLLECTOR) == 3, app.log()[-4000:]
    finally:
        app.stop()


def test_switched_off_otel_perf_leaves_the_exporters_lines_alone(tmp_path: Path) -> None:
    """`OTEL_PERF_ENABLED=false`: plain OpenTelemetry, its retry lines included; nothing of ours."""
    app = _start(tmp_path / "app", free_port(), OTEL_PERF_ENABLED="false", OTEL_BSP_SCHEDULE_DELAY="100")
    try:
        app.get("/spans/3")
        wait_until(lambda: "Transient error" in app.log(), timeout=15, what="the exporter's retry line")
        assert "otel-perf" not in app.log(), app.log()[-4000:]
    finally:
        os.killpg(app.process.pid, signal.SIGKILL)  # its exit waits for the collector: not tested here
        app.process.wait()


def _finding(trace_id: str = "ab" * 16) -> Finding:
    return Finding(
        type="n_plus_one",
        severity=Severity.HIGH,
        service="shop",
        operation="GET /orders",
        title="N+1 queries: 30× SELECT * FROM [dbo].[orders] WHERE id = ? in GET /orders",
        fingerprint="1-abc",
        trace_id=trace_id,
        details={
            "suggestion": "fetch them in one query: WHERE id IN (…)",
            "code_location": {"file": "/srv/app/orders.py", "line": 41, "function": "list_orders"},
        },
    )


def test_the_trace_link_is_in_console_file_and_webhook_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder()
    try:
        for name in list(os.environ):
            if name.startswith("OTEL_PERF_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("OTEL_PERF_TRACE_URL", TRACE_URL)
        monkeypatch.setenv("OTEL_PERF_ALERTS_WEBHOOK_URL", recorder.url)
        monkeypatch.setenv("OTEL_PERF_ALERTS_FILE", str(tmp_path / "alerts.jsonl"))
        monkeypatch.setenv("OTEL_PERF_ALERTS_CONSOLE", "true")
        monkeypatch.setenv("OTEL_PERF_ALERTS_OTLP", "false")
        settings = SinkSettings.load(strict=True)
        assert settings.trace_url == TRACE_URL
        router = AlertRouter(sinks=build_sinks(settings))
        router.deliver(Alert(_finding()))
        link = "http://localhost:16686/trace/" + "ab" * 16
        [request] = recorder.requests
        assert request["json"]["trace_url"] == link
        assert f"trace: {link}" in request["json"]["text"].splitlines()
        assert "at /srv/app/orders.py:41 in list_orders" in request["json"]["text"]
        assert "fix: fetch them in one query" in request["json"]["text"]
        [line] = (tmp_path / "alerts.jsonl").read_text().splitlines()
        assert json.loads(line)["trace_url"] == link
        console = capsys.readouterr().err.splitlines()
        assert console[0] == (
            "otel-perf HIGH N+1 queries: 30× SELECT * FROM [dbo].[orders] WHERE id = ? in GET /orders"
        )
        assert f"  trace: {link}" in console and "  at /srv/app/orders.py:41 in list_orders" in console
        # No trace, no link (and no empty field).
        router.deliver(Alert(_finding(trace_id="")))
        assert "trace_url" not in recorder.requests[1]["json"]
        assert "trace:" not in capsys.readouterr().err
    finally:
        recorder.close()


@pytest.mark.parametrize(
    "value", ["http://localhost:16686/trace/", "jaeger/{trace_id}", "ftp://x/{trace_id}"]
)
def test_a_trace_url_without_its_place_for_the_id_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_perf.errors import SettingsError

    monkeypatch.setenv("OTEL_PERF_TRACE_URL", value)
    with pytest.raises(SettingsError, match=r"^OTEL_PERF_TRACE_URL="):
        SinkSettings.load(strict=True)
