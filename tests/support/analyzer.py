"""A real `otel-perf analyzer` process for tests: OTLP in over HTTP, alerts to a file, nothing
forwarded anywhere (the export endpoint is a port nobody listens on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.apps import free_port, wait_until

OTEL_PERF = str(Path(sys.executable).parent / "otel-perf")


class Analyzer:
    """A real `otel-perf analyzer` process: alerts to a file, nothing forwarded anywhere."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.alerts_file = workdir / "alerts.jsonl"
        self.http_port = free_port()
        self.log = workdir / "analyzer.log"
        full_env = {
            **{key: value for key, value in os.environ.items() if not key.startswith("OTEL_")},
            "OTEL_PERF_ANALYZER_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
            "OTEL_PERF_ANALYZER_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "OTEL_PERF_ANALYZER_EXPORT_ENDPOINT": f"127.0.0.1:{free_port()}",  # nobody: not the point here
            "OTEL_PERF_ANALYZER_TRACE_WAIT_MS": "50",
            "OTEL_PERF_ANALYZER_MAX_ACK_WAIT_S": "0",
            "OTEL_PERF_MODE": "collector",
            "OTEL_PERF_ALERTS_FILE": str(self.alerts_file),
            "OTEL_PERF_ALERTS_OTLP": "false",
            "OTEL_PERF_ALERTS_OUTBOX_PATH": ":memory:",
            "OTEL_PERF_MONITOR_STATE_PATH": str(workdir / "monitors.sqlite3"),
            **env,
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [OTEL_PERF, "analyzer"],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._ready, timeout=30, what="the analyzer")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"analyzer exited: {self.log.read_text()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def send(self, body: bytes) -> None:
        response = httpx.post(
            f"http://127.0.0.1:{self.http_port}/v1/traces",
            content=body,
            headers={"Content-Type": "application/x-protobuf"},
            timeout=10,
        )
        assert response.status_code == 200, response.text

    def alerts(self, alert_type: str | None = None) -> list[dict[str, Any]]:
        if not self.alerts_file.exists():
            return []
        alerts = [json.loads(line) for line in self.alerts_file.read_text().splitlines() if line.strip()]
        return [alert for alert in alerts if alert_type is None or alert["type"] == alert_type]

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log.read_text(errors="replace")
