"""Real processes for the benchmarks: the sink collector, the analyzer, an app; CPU measured per process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from otel_perf.stack import toolchain

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout:.0f} s")


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far."""
    process = psutil.Process(pid)
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        try:
            times = each.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start(argv: Sequence[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    handle = log.open("wb")
    return subprocess.Popen(
        list(argv), env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def base_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}


@contextmanager
def sink_collector(workdir: Path) -> Iterator[tuple[int, subprocess.Popen]]:
    """The built collector receiving OTLP/gRPC and dropping it: (port, process)."""
    port = free_port()
    binary = toolchain.ensure_binary("otelcol")
    process = start(
        [str(binary), "--config", str(HERE / "sink-collector.yaml")],
        {**base_env(), "SINK_GRPC_PORT": str(port)},
        workdir / "sink-collector.log",
    )
    try:
        wait_for_port(port, process)
        yield port, process
    finally:
        stop(process)


@contextmanager
def analyzer(workdir: Path, export_port: int, **env: str) -> Iterator[tuple[int, int, subprocess.Popen]]:
    """`otel-perf analyzer` forwarding to `export_port`: (gRPC port, HTTP port, process)."""
    grpc_port, http_port = free_port(), free_port()
    process = start(
        [sys.executable, "-m", "otel_perf.cli", "analyzer"],
        {
            **base_env(),
            "OTEL_PERF_ANALYZER_GRPC_ENDPOINT": f"127.0.0.1:{grpc_port}",
            "OTEL_PERF_ANALYZER_HTTP_ENDPOINT": f"127.0.0.1:{http_port}",
            "OTEL_PERF_ANALYZER_EXPORT_ENDPOINT": f"127.0.0.1:{export_port}",
            "OTEL_PERF_ALERTS_FILE": str(workdir / "analyzer-alerts.jsonl"),
            **env,
        },
        workdir / "analyzer.log",
    )
    try:
        wait_for_http(f"http://127.0.0.1:{http_port}/readyz", process)
        yield grpc_port, http_port, process
    finally:
        stop(process)
