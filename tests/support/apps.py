"""Start real apps the way users do: `opentelemetry-instrument python main.py`, the sitecustomize
drop-in, or a server command (`uvicorn --workers`), and read what otel-perf wrote."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import otel_perf.bootstrap
from otel_perf.demo.runner import APP_SOURCE

BIN = Path(sys.executable).parent
SITECUSTOMIZE_DIR = str(Path(otel_perf.bootstrap.__file__).resolve().parent / "sitecustomize")

# No collector in these tests unless a test asks for one.
QUIET_EXPORT = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.1, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class RunningApp:
    workdir: Path
    port: int
    process: subprocess.Popen[bytes]
    alerts_file: Path
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.get(self.base_url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def alerts(self) -> list[dict[str, Any]]:
        if not self.alerts_file.exists():
            return []
        return [json.loads(line) for line in self.alerts_file.read_text().splitlines() if line.strip()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_alerts(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            alerts = self.alerts()
            return alerts if predicate(alerts) else None

        try:
            return wait_until(check, timeout, what="alerts")
        except AssertionError:
            raise AssertionError(
                f"expected alerts did not arrive; got {self.alerts()}\napp log:\n{self.log()[-4000:]}"
            ) from None

    def settle(self, seconds: float = 1.0) -> list[dict[str, Any]]:
        """Alerts once analysis had time to finish (grace + worker), for asserting absences."""
        time.sleep(seconds)
        return self.alerts()

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def prepare_shop(workdir: Path, env: dict[str, str], python: str | Path = sys.executable) -> None:
    """The demo shop as a user's `main.py`, with its database seeded (uninstrumented)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(APP_SOURCE, workdir / "main.py")
    subprocess.run([str(python), "-c", "import main; main.seed()"], cwd=workdir, env=env, check=True)


def start_app(
    workdir: Path,
    launch: str = "instrument",
    *,
    env: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
    ready_path: str = "/healthz",
    export: dict[str, str] | None = None,
    seed: bool = True,
    python: str | Path | None = None,
    cwd: Path | None = None,
) -> RunningApp:
    """Start the shop (or `command`) in `workdir`.

    launch: "instrument" (opentelemetry-instrument <command>), "sitecustomize" (PYTHONPATH drop-in),
    or "plain" (no instrumentation at all).
    python: the interpreter of the default command and the seed, e.g. one of another environment
    (default: this one); `opentelemetry-instrument` is that environment's where it has one, else this one's.
    cwd: where the app runs (default: `workdir`), e.g. the repository root.
    """
    python = python or sys.executable
    port = free_port()
    alerts_file = workdir / "alerts.jsonl"
    full_env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "PYTHONPATH"))},
        **(QUIET_EXPORT if export is None else export),
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_PERF_ALERTS_FILE": str(alerts_file),
        # Each app its own outbox: the apps of a test session are all called "shop".
        "OTEL_PERF_ALERTS_OUTBOX_PATH": str(workdir / "alerts-outbox.sqlite3"),
        "PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    if seed:
        prepare_shop(workdir, full_env, python)
    argv = list(command or [python, workdir / "main.py" if cwd else "main.py"])
    argv = [str(part).replace("{port}", str(port)) for part in argv]
    if launch == "instrument":
        own_launcher = Path(python).parent / "opentelemetry-instrument"
        argv = [str(own_launcher if own_launcher.exists() else BIN / "opentelemetry-instrument"), *argv]
    elif launch == "sitecustomize":
        existing = full_env.get("PYTHONPATH")
        full_env["PYTHONPATH"] = SITECUSTOMIZE_DIR + (os.pathsep + existing if existing else "")
    elif launch != "plain":
        raise ValueError(launch)
    log_path = workdir / "app.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd or workdir,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = RunningApp(workdir, port, process, alerts_file, log_path, full_env)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"app exited with {process.returncode}:\n{app.log()[-4000:]}")
        try:
            return httpx.get(app.base_url + ready_path, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=40, what=f"{argv} to serve {ready_path}")
    except BaseException:
        app.stop()
        raise
    return app


SHOP_TRAFFIC = [
    "/healthz",
    "/orders",
    "/orders/eager",
    "/orders/recent",
    "/dashboard",
    "/customers/7",
    "/reports/order-lines",
    "/reports/revenue",
    "/stock/sequential",
    "/stock/parallel",
    "/stock/batch",
    "/products/search",
]


def drive_shop(app: RunningApp, paths: Sequence[str] = SHOP_TRAFFIC, rounds: int = 1) -> None:
    for _ in range(rounds):
        for path in paths:
            app.get(path)


def by_operation(alerts: list[dict[str, Any]], alert_type: str | None = None) -> dict[str, dict[str, Any]]:
    return {
        alert["operation"]: alert for alert in alerts if alert_type is None or alert["type"] == alert_type
    }
