"""`otel-perf demo`: run the bundled shop under `opentelemetry-instrument`, drive real traffic,
show what otel-perf found. No collector needed: the app's export errors go to its log file, not
to the screen (and if `OTEL_EXPORTER_OTLP_ENDPOINT` points at a running collector, the demo's
traces and alerts arrive there too).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import httpx
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from rich.console import Console
from rich.text import Text

from otel_perf.errors import DemoError
from otel_perf.processors.otlp import hex_ids
from otel_perf.render import findings_table, group_findings

APP_SOURCE = Path(__file__).with_name("app.py")

# (path, what the endpoint shows): each is requested a few times.
TRAFFIC = [
    ("/healthz", "health check"),
    ("/orders", "ORM lazy-load N+1"),
    ("/orders/eager", "the fix: selectinload"),
    ("/orders/recent", "a short loop (3 lazy loads)"),
    ("/dashboard", "several different queries"),
    ("/customers/7", "a primary-key lookup"),
    ("/reports/order-lines", "raw-SQL N+1 with literals"),
    ("/reports/revenue", "a slow query"),
    ("/stock/sequential", "HTTP N+1 (calls in a loop)"),
    ("/stock/parallel", "the same calls, concurrently (still one per SKU)"),
    ("/stock/batch", "the fix: one batch call"),
    ("/products/search", "a quick search (until release 1.1.0)"),
]
EXPECTED_FINDINGS = {
    "GET /orders",
    "GET /reports/order-lines",
    "GET /reports/revenue",
    "GET /stock/sequential",
    "GET /stock/parallel",
}


# Work outside any request: the shop's seeding at start-up, not an endpoint of its own.
NOT_ENDPOINTS = frozenset(("startup", "background"))
WORKDIR_PREFIX = "otel-perf-demo-"
YOUR_APP = (
    "Your app: pip install otel-perf && opentelemetry-instrument python main.py — see README 'Quick start'"
)


@dataclass
class DemoResult:
    """What the demo found, read before its working directory (app, database, monitor state,
    alerts) was removed: the demo leaves nothing behind."""

    alerts: list[dict[str, object]] = field(default_factory=list)
    quiet_endpoints: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def instrument_command(script: str) -> list[str]:
    """`opentelemetry-instrument python <script>` with this interpreter's launcher."""
    launcher = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    if launcher is None:
        launcher = shutil.which("opentelemetry-instrument")
    if launcher is None:
        raise DemoError("opentelemetry-instrument not found: reinstall otel-perf (pip install otel-perf)")
    return [launcher, sys.executable, script]


def read_alerts(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Compressed time for the trend monitor: one-second windows, no daily season. A window's p95 is
# compared only with 50 requests or more (the monitor raises OTEL_PERF_TREND_MIN_REQUESTS to that for
# p95), and a change is tested against the spread of the baseline windows, each judged against at
# least 5 before it. What keeps one slow moment on a busy machine (a window whose p95 jumped) from
# hiding the regression: ten such baseline windows (`BASELINE_S`), the same request rate on both
# releases (a window with fewer requests weighs less), and a clear step (+200 ms in 1.1.0). A starved
# CPU can also lift the baseline's p95 by tens of ms for several windows: not worth an alert in the
# demo (it would fire on 1.0.0 and hold the series, hiding 1.1.0's), hence an 80 ms floor.
COMPRESSED_TIME = {
    "OTEL_PERF_MONITOR_WINDOW_S": "1",
    "OTEL_PERF_MONITOR_LATENESS_S": "0.3",
    "OTEL_PERF_MONITOR_FLUSH_INTERVAL_S": "0.2",
    "OTEL_PERF_TREND_SEASON_S": "0",
    "OTEL_PERF_TREND_MIN_REQUESTS": "5",
    "OTEL_PERF_TREND_MIN_REFERENCE_WINDOWS": "5",
    "OTEL_PERF_TREND_MIN_DELTA_MS": "80",
}
RELEASES = ("1.0.0", "1.1.0")  # 1.1.0 computes search recommendations inline: slower
SEARCH = "/products/search"
BASELINE_S = 15.0  # seconds (windows) of search traffic on 1.0.0
SEARCH_RATE = 100.0  # search requests per second on either release: twice the 50 a p95 needs
SEARCH_USERS = 40  # each paced at one request per 400 ms, which 1.1.0's slower search keeps up with


def run_demo(
    console: Console,
    rounds: int = 3,
    timeout_s: float = 60.0,
    release: bool = True,
    save: Path | None = None,
) -> DemoResult:
    """The shop on 1.0.0 with every kind of traffic; then, with `release`, restarted as 1.1.0, whose
    search is slower: the trend monitor compares it with the baseline the first run left behind.
    With `save`, the shop's traces are written there as OTLP JSON lines (see `TraceSaver`).
    Everything else lives in a temporary directory removed on the way out, Ctrl+C or SIGTERM too."""
    with (
        _terminate_as_interrupt(),
        tempfile.TemporaryDirectory(prefix=WORKDIR_PREFIX, ignore_cleanup_errors=True) as workdir,
    ):
        if save is None:
            return _run_demo(console, Path(workdir), rounds, timeout_s, release, {})
        with TraceSaver(save) as saver:
            return _run_demo(console, Path(workdir), rounds, timeout_s, release, saver.environment())


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a closed terminal, `timeout`, a CI runner) unwinds like Ctrl+C, so the shop is
    stopped and the working directory removed rather than left in the temp dir."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_demo(
    console: Console, workdir: Path, rounds: int, timeout_s: float, release: bool, export_env: dict[str, str]
) -> DemoResult:
    shutil.copy(APP_SOURCE, workdir / "main.py")
    alerts_file = workdir / "alerts.jsonl"
    env = {
        **os.environ,
        **COMPRESSED_TIME,
        "OTEL_SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME", "otel-perf-demo"),
        "OTEL_PERF_ALERTS_FILE": str(alerts_file),
        "OTEL_PERF_MONITOR_STATE_PATH": str(workdir / "monitors.sqlite3"),
        "OTEL_PERF_ALERTS_OUTBOX_PATH": str(workdir / "alerts-outbox.sqlite3"),
        # Export attempts with no collector would retry for seconds at shutdown.
        "OTEL_EXPORTER_OTLP_TIMEOUT": os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", "2"),
        "PYTHONUNBUFFERED": "1",
        **export_env,
    }
    with _running(console, workdir, env, RELEASES[0], timeout_s) as client:
        with console.status(f"Sending traffic to {RELEASES[0]}…"):
            for _ in range(rounds):
                for path, _ in TRAFFIC:
                    client.get(path).raise_for_status()
            if release:
                _search_for(client, BASELINE_S)
        with console.status("Waiting for the analysis…"):
            _wait_for_alerts(
                alerts_file, lambda alerts: _operations(alerts) >= EXPECTED_FINDINGS, timeout_s=15
            )
    if release:
        released = {**env, "SHOP_RECOMMENDATIONS": "inline"}
        with (
            _running(console, workdir, released, RELEASES[1], timeout_s) as client,
            console.status(f"Released {RELEASES[1]}: sending search traffic…"),
        ):
            _search_for(client, 20.0, done=lambda: _has_trend(read_alerts(alerts_file)))
    alerts = read_alerts(alerts_file)
    found = _operations(alerts)
    quiet = [path for path, _ in TRAFFIC if f"GET {_route_of(path)}" not in found]
    return DemoResult(alerts, quiet)


class TraceSaver:
    """A loopback OTLP/HTTP receiver the shop exports its traces to, writing each export request as
    one OTLP JSON line (hex ids), the collector's file exporter format, which `otel-perf analyze`
    reads. The app itself is left as it is: only its exporter's endpoint changes, so the file
    holds exactly the spans a collector would have received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.requests = 0
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        saver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                try:
                    saver.write(body)
                except Exception as error:  # a request we can't read: refused, never a crash
                    self.send_error(400, str(error)[:200])
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the demo's screen is for findings."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otel-perf-demo-save", daemon=True
        )

    def environment(self) -> dict[str, str]:
        """The app's exporter settings that send its traces here (OTLP over HTTP/protobuf)."""
        port = self._server.server_address[1]
        return {
            "OTEL_TRACES_EXPORTER": "otlp_proto_http",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
        }

    def write(self, payload: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(payload)
        line = json.dumps(hex_ids(MessageToDict(request)), separators=(",", ":"))
        with self._lock:
            assert self._file is not None
            self._file.write(line + "\n")
            self._file.flush()
            self.requests += 1

    def __enter__(self) -> TraceSaver:
        self._file = self.path.open("w", encoding="utf-8")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            assert self._file is not None
            self._file.close()


@contextlib.contextmanager
def _running(
    console: Console, workdir: Path, env: dict[str, str], version: str, timeout_s: float
) -> Iterator[httpx.Client]:
    """The shop at `version`, under opentelemetry-instrument, stopped (gracefully) on exit."""
    port = free_port()
    attributes = ",".join(filter(None, [env.get("OTEL_RESOURCE_ATTRIBUTES"), f"service.version={version}"]))
    app_env = {**env, "PORT": str(port), "OTEL_RESOURCE_ATTRIBUTES": attributes}
    log_path = workdir / "app.log"
    with log_path.open("a") as log:
        app = subprocess.Popen(
            instrument_command("main.py"), cwd=workdir, env=app_env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        with console.status(f"Starting the demo shop {version} under opentelemetry-instrument…"):
            _wait_ready(app, base, log_path, timeout_s)
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client
    finally:
        _stop(app)


def _search_for(client: httpx.Client, seconds: float, done: Callable[[], bool] = lambda: False) -> None:
    """Search traffic for `seconds`, or until `done`, at `SEARCH_RATE` from `SEARCH_USERS` paced
    users: the same number of requests in every one-second window whichever release answers (as
    long as a request takes less than a user's interval), so both releases' windows weigh the same
    in the trend test. A user that falls behind does not catch up in a burst."""
    start = time.monotonic()
    deadline = start + seconds
    interval = SEARCH_USERS / SEARCH_RATE
    stop = threading.Event()

    def user(offset: float) -> None:
        next_at = start + offset
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            client.get(SEARCH).raise_for_status()
            next_at = max(next_at + interval, time.monotonic())

    with ThreadPoolExecutor(max_workers=SEARCH_USERS) as pool:
        users = [pool.submit(user, index / SEARCH_RATE) for index in range(SEARCH_USERS)]
        try:
            while time.monotonic() < deadline and not done() and not any(each.done() for each in users):
                time.sleep(0.2)
        finally:
            stop.set()  # also on Ctrl+C: the users stop after their current request
        for each in users:
            each.result()


def _operations(alerts: list[dict[str, object]]) -> set[str]:
    return {str(alert["operation"]) for alert in alerts}


def _has_trend(alerts: list[dict[str, object]]) -> bool:
    return any(alert["type"] == "trend_degradation" for alert in alerts)


def _route_of(path: str) -> str:
    return "/customers/{customer_id}" if path.startswith("/customers/") else path


def _wait_ready(app: subprocess.Popen[bytes], base: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise DemoError(
                f"the demo app exited with {app.returncode}; its log:\n{log_path.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise DemoError(
        f"the demo app did not answer within {timeout_s:.0f} s; its log:\n{log_path.read_text()[-3000:]}"
    )


def _wait_for_alerts(
    path: Path, done: Callable[[list[dict[str, object]]], bool], timeout_s: float
) -> list[dict[str, object]]:
    """Until `done` and nothing new came for a second, or the timeout."""
    deadline = time.monotonic() + timeout_s
    seen, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        alerts = read_alerts(path)
        if len(alerts) != seen:
            seen, stable_since = len(alerts), time.monotonic()
        if done(alerts) and time.monotonic() - stable_since > 1.0:
            break
        time.sleep(0.1)
    return read_alerts(path)


def _stop(app: subprocess.Popen[bytes]) -> None:
    """Gracefully (SIGINT: the app flushes its alerts), killed if it takes too long or a second
    Ctrl+C comes: never left running, writing into a directory being removed."""
    try:
        if app.poll() is None:
            app.send_signal(signal.SIGINT)
            app.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


def print_result(console: Console, result: DemoResult) -> None:
    """One row per finding at an endpoint; work outside any request (the shop seeding its database
    at start-up) below, as such; the quiet endpoints; how to run your own app."""
    endpoints = [alert for alert in result.alerts if alert.get("operation") not in NOT_ENDPOINTS]
    console.print(findings_table(endpoints, title="otel-perf found in the demo shop"))
    outside = group_findings(alert for alert in result.alerts if alert.get("operation") in NOT_ENDPOINTS)
    for alert, count in outside:
        details = alert.get("details")
        fix = details.get("suggestion") if isinstance(details, dict) else None
        line = Text.assemble(
            ("Start-up work" if alert.get("operation") == "startup" else "Background work", "bold"),
            f" (not an endpoint): {alert.get('title')} ×{count}",
            f" — fix: {fix}" if fix else "",
        )
        console.print(line)
    if result.quiet_endpoints:
        console.print("[green]Quiet, as they should be:[/] " + ", ".join(result.quiet_endpoints))
    console.print(YOUR_APP, soft_wrap=True)  # one line to copy, whatever the width
