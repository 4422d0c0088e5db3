"""The real collector binary as an app's only backend: OTLP/gRPC in, the traces it receives written to
spans.jsonl by its file exporter (OTLP JSON lines), metrics and logs kept apart. Tests count what a
user's collector would have got."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from otel_perf.stack import toolchain
from tests.support.apps import free_port, wait_until

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  file/traces:
    path: {workdir}/spans.jsonl
    flush_interval: 100ms
  file/rest:
    path: {workdir}/rest.jsonl
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file/traces]
    metrics:
      receivers: [otlp]
      exporters: [file/rest]
    logs:
      receivers: [otlp]
      exporters: [file/rest]
"""


class FileCollector:
    """Started on `port` (a free one by default: a collector a developer runs on 4317 must not
    change a test), accepting once the constructor returns."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.spans_file = workdir / "spans.jsonl"
        config = workdir / "collector.yaml"
        config.write_text(CONFIG.format(port=self.port, workdir=workdir))
        self.log_path = workdir / "collector.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(toolchain.ensure_binary("otelcol")), "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._accepting, timeout=30, what="the collector's OTLP gRPC port")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accepting(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"collector exited:\n{self.log_path.read_text()[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def all_spans(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The spans in the complete lines written from byte `offset` on, and where those lines end."""
        found: list[dict[str, Any]] = []
        if not self.spans_file.exists():
            return found, offset
        with self.spans_file.open("rb") as file:
            file.seek(offset)
            data = file.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            if line.strip():
                for resource_spans in json.loads(line).get("resourceSpans", ()):
                    for scope_spans in resource_spans.get("scopeSpans", ()):
                        found.extend(scope_spans.get("spans", ()))
        return found, offset + end

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
