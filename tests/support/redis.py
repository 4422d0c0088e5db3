"""A real Redis server for the tests: a private `redis-server` on a free loopback port, in a
temporary directory, nothing persisted (`--save ''`, `--appendonly no`), stopped at the end. A
missing `redis-server` fails the run: scripts/test installs Debian's `redis-server` package."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.apps import free_port


def _binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server (scripts/test does)")
    return found


def _ping(port: int) -> bool:
    """One RESP PING over a raw socket (no client library needed to know the server is up)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Redis:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @classmethod
    def start(cls, timeout: float = 10.0) -> Redis:
        binary = _binary()
        directory = Path(tempfile.mkdtemp(prefix="otel-perf-redis-"))
        port = free_port()
        argv = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        server = cls(port, directory, process)
        deadline = time.monotonic() + timeout
        while not _ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = server.log()
                server.stop()
                raise RuntimeError(f"redis-server did not start on port {port}:\n{log[-2000:]}")
            time.sleep(0.05)
        return server

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
