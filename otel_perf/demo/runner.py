"""`otel-perf demo`: run the bundled shop under `opentelemetry-instrument`, drive real traffic,
show what otel-perf found. No collector needed: the app's export errors go to its log file, not
to the screen (and if `OTEL_EXPORTER_OTLP_ENDPOINT` points at a running collector, the demo's
traces and alerts arrive there too).
"""

from __future__ import annotations

import base64
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

from otel_perf.errors import DemoError
from otel_perf.render import alerts_table

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


@dataclass
class DemoResult:
    alerts: list[dict[str, object]] = field(default_factory=list)
    quiet_endpoints: list[str] = field(default_factory=list)
    workdir: Path = Path()


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


# Compressed time for the trend monitor: one-second windows, no daily season, few requests per window.
COMPRESSED_TIME = {
    "OTEL_PERF_MONITOR_WINDOW_S": "1",
    "OTEL_PERF_MONITOR_LATENESS_S": "0.3",
    "OTEL_PERF_MONITOR_FLUSH_INTERVAL_S": "0.2",
    "OTEL_PERF_TREND_SEASON_S": "0",
    "OTEL_PERF_TREND_MIN_REQUESTS": "5",
    "OTEL_PERF_TREND_MIN_REFERENCE_WINDOWS": "5",
}
RELEASES = ("1.0.0", "1.1.0")  # 1.1.0 computes search recommendations inline: slower
SEARCH = "/products/search"
BASELINE_S = 10.0  # seconds (windows) of search traffic on 1.0.0
SEARCH_USERS = 3


def run_demo(
    console: Console,
    rounds: int = 3,
    timeout_s: float = 60.0,
    release: bool = True,
    save: Path | None = None,
) -> DemoResult:
    """The shop on 1.0.0 with every kind of traffic; then, with `release`, restarted as 1.1.0, whose
    search is slower: the trend monitor compares it with the baseline the first run left behind.
    With `save`, the shop's traces are written there as OTLP JSON lines (see `TraceSaver`)."""
    if save is None:
        return _run_demo(console, rounds, timeout_s, release, {})
    with TraceSaver(save) as saver:
        return _run_demo(console, rounds, timeout_s, release, saver.environment())


def _run_demo(
    console: Console, rounds: int, timeout_s: float, release: bool, export_env: dict[str, str]
) -> DemoResult:
    workdir = Path(tempfile.mkdtemp(prefix="otel-perf-demo-"))
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
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not _has_trend(read_alerts(alerts_file)):
                _search_for(client, 1.0)
    alerts = read_alerts(alerts_file)
    found = _operations(alerts)
    quiet = [path for path, _ in TRAFFIC if f"GET {_route_of(path)}" not in found]
    return DemoResult(alerts, quiet, workdir)


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
        line = json.dumps(_hex_ids(MessageToDict(request)), separators=(",", ":"))
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


_ID_FIELDS = frozenset(("traceId", "spanId", "parentSpanId"))


def _hex_ids(value: object) -> object:
    """Protobuf JSON's base64 ids as OTLP/JSON's hex ones, as the file exporter writes them."""
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item).hex()
            if key in _ID_FIELDS and isinstance(item, str)
            else _hex_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


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


def _search_for(client: httpx.Client, seconds: float) -> None:
    """Search traffic for `seconds` from a few users at once: enough requests in every one-second
    window for its p95 to be compared (50), on either release."""
    deadline = time.monotonic() + seconds

    def user() -> None:
        while time.monotonic() < deadline:
            client.get(SEARCH).raise_for_status()
            time.sleep(0.01)

    with ThreadPoolExecutor(max_workers=SEARCH_USERS) as users:
        for running in [users.submit(user) for _ in range(SEARCH_USERS)]:
            running.result()


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
    raise DemoError(f"the demo app did not answer within {timeout_s:.0f} s; see {log_path}")


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
    if app.poll() is None:
        app.send_signal(signal.SIGINT)
        try:
            app.wait(timeout=8)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()


def print_result(console: Console, result: DemoResult) -> None:
    console.print(alerts_table(result.alerts, title="otel-perf found in the demo shop"))
    if result.quiet_endpoints:
        console.print("[green]Quiet, as they should be:[/] " + ", ".join(result.quiet_endpoints))
    console.print(
        f"Alerts as JSON lines: {result.workdir / 'alerts.jsonl'}   App log: {result.workdir / 'app.log'}",
        soft_wrap=True,
    )
