"""`otel-perf rig`: the whole pipeline on loopback from the repository's configs, without Docker.

Collector (gateway config), analyzer(s), Jaeger and Alertmanager run as background processes;
their pids, logs and ports live in a state directory, so `status` and `down` work from any later
shell. The end-to-end tests start the same `Stack` on free ports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import httpx
import psutil

from otel_perf.errors import RigError
from otel_perf.stack import toolchain

STACK_BINARIES = ("otelcol", "jaeger", "alertmanager")


@dataclass(frozen=True)
class StackPorts:
    """Standard ports by default (OTLP 4317/4318, Jaeger 16686, Alertmanager 9093)."""

    otlp_grpc: int = 4317
    otlp_http: int = 4318
    analyzed_grpc: int = 4327
    collector_health: int = 13133
    collector_telemetry: int = 8888
    prometheus: int = 8889
    jaeger_otlp_grpc: int = 4417
    jaeger_otlp_http: int = 4418
    jaeger_query: int = 16686
    jaeger_query_grpc: int = 16685
    jaeger_telemetry: int = 8887
    alertmanager: int = 9093
    analyzer_grpc: int = 14317
    analyzer_http: int = 14318

    @classmethod
    def free(cls) -> StackPorts:
        """Every port picked free by the kernel (tests run stacks side by side with anything else)."""
        sockets = []
        try:
            for _ in fields(cls):
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                sockets.append(sock)
            return cls(*(sock.getsockname()[1] for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()

    def analyzer(self, index: int) -> tuple[int, int]:
        """(gRPC, HTTP) ports of analyzer `index`: the first on the configured ports, others after them."""
        return self.analyzer_grpc + 2 * index, self.analyzer_http + 2 * index


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str
    endpoint: str  # what to tell the user

    def log_path(self, state_dir: Path) -> Path:
        return state_dir / f"{self.name}.log"

    def pid_path(self, state_dir: Path) -> Path:
        return state_dir / f"{self.name}.pid"


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    endpoint: str


def config_file(name: str) -> Path:
    """A config shipped in `collector/` (package data of `otel_perf.collector`)."""
    return Path(str(resources.files("otel_perf.collector").joinpath(name)))


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "otel-perf" / "rig"


@dataclass
class Stack:
    state_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    analyzers: int = 1
    binaries: dict[str, Path] = field(default_factory=dict)
    analyzer_env: dict[str, str] = field(default_factory=dict)
    collector_env: dict[str, str] = field(default_factory=dict)
    # Configs of collector/ merged over gateway.yaml, e.g. gateway-analyzer-auth.yaml (TLS and a
    # bearer token towards analyzers started with OTEL_PERF_ANALYZER_TLS_*/AUTH_* in analyzer_env).
    collector_overlays: tuple[str, ...] = ()

    # --- definition -------------------------------------------------------------------------------

    def services(self) -> list[Service]:
        """In start order: backends first, the collector last (it connects to all of them)."""
        ports, state = self.ports, self.state_dir
        base_env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
        loopback = "127.0.0.1"
        jaeger_url = f"http://{loopback}:{ports.jaeger_query}"
        alertmanager_url = f"http://{loopback}:{ports.alertmanager}"
        services = [
            Service(
                "alertmanager",
                [
                    str(self._binary("alertmanager")),
                    f"--config.file={config_file('alertmanager.yml')}",
                    f"--storage.path={state / 'alertmanager-data'}",
                    f"--web.listen-address={loopback}:{ports.alertmanager}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                base_env,
                f"{alertmanager_url}/-/ready",
                alertmanager_url,
            ),
            Service(
                "jaeger",
                [str(self._binary("jaeger")), "--config", str(config_file("jaeger.yaml"))],
                {
                    **base_env,
                    # Jaeger traces its own queries to localhost:4317 by default: our collector.
                    "OTEL_SDK_DISABLED": "true",
                    "OTEL_TRACES_SAMPLER": "always_off",
                    "OTEL_PERF_JAEGER_OTLP_ENDPOINT": f"{loopback}:{ports.jaeger_otlp_grpc}",
                    "OTEL_PERF_JAEGER_OTLP_HTTP_ENDPOINT": f"{loopback}:{ports.jaeger_otlp_http}",
                    "OTEL_PERF_JAEGER_QUERY_ENDPOINT": f"{loopback}:{ports.jaeger_query}",
                    "OTEL_PERF_JAEGER_QUERY_GRPC_ENDPOINT": f"{loopback}:{ports.jaeger_query_grpc}",
                    "OTEL_PERF_JAEGER_TELEMETRY_PORT": str(ports.jaeger_telemetry),
                },
                f"{jaeger_url}/api/services",
                f"{jaeger_url} (query API; UI placeholder in the module build)",
            ),
        ]
        tls = "OTEL_PERF_ANALYZER_TLS_CERT_FILE"
        scheme = "https" if self.analyzer_env.get(tls, os.environ.get(tls)) else "http"
        for index in range(self.analyzers):
            grpc_port, http_port = ports.analyzer(index)
            services.append(
                Service(
                    f"analyzer-{index + 1}",
                    [sys.executable, "-m", "otel_perf.cli", "analyzer"],
                    {
                        **base_env,
                        **{key: value for key, value in os.environ.items() if key.startswith("OTEL_PERF_")},
                        "OTEL_PERF_ANALYZER_GRPC_ENDPOINT": f"{loopback}:{grpc_port}",
                        "OTEL_PERF_ANALYZER_HTTP_ENDPOINT": f"{loopback}:{http_port}",
                        "OTEL_PERF_ANALYZER_EXPORT_ENDPOINT": f"{loopback}:{ports.analyzed_grpc}",
                        "OTEL_PERF_ALERTS_FILE": str(state / f"analyzer-{index + 1}-alerts.jsonl"),
                        # The stack's analyzers share their monitors' windows (and only theirs).
                        "OTEL_PERF_MONITOR_STATE_PATH": os.environ.get(
                            "OTEL_PERF_MONITOR_STATE_PATH", str(state / "analyzer-monitors.sqlite3")
                        ),
                        "OTEL_PERF_ALERTS_OUTBOX_PATH": str(state / "analyzer-alerts-outbox.sqlite3"),
                        **self.analyzer_env,
                    },
                    f"{scheme}://{loopback}:{http_port}/readyz",
                    f"OTLP gRPC {loopback}:{grpc_port}, HTTP {scheme}://{loopback}:{http_port}",
                )
            )
        analyzer_hosts = ", ".join(f"{loopback}:{ports.analyzer(i)[0]}" for i in range(self.analyzers))
        services.append(
            Service(
                "collector",
                [
                    str(self._binary("otelcol")),
                    *(
                        argument
                        for name in ("gateway.yaml", *self.collector_overlays)
                        for argument in ("--config", str(config_file(name)))
                    ),
                ],
                {
                    **base_env,
                    "OTEL_PERF_COLLECTOR_GRPC_ENDPOINT": f"{loopback}:{ports.otlp_grpc}",
                    "OTEL_PERF_COLLECTOR_HTTP_ENDPOINT": f"{loopback}:{ports.otlp_http}",
                    "OTEL_PERF_COLLECTOR_ANALYZED_ENDPOINT": f"{loopback}:{ports.analyzed_grpc}",
                    "OTEL_PERF_COLLECTOR_HEALTH_ENDPOINT": f"{loopback}:{ports.collector_health}",
                    "OTEL_PERF_COLLECTOR_TELEMETRY_PORT": str(ports.collector_telemetry),
                    "OTEL_PERF_COLLECTOR_STORAGE_DIR": str(state / "collector-storage"),
                    "OTEL_PERF_PROMETHEUS_ENDPOINT": f"{loopback}:{ports.prometheus}",
                    "OTEL_PERF_ANALYZERS": f"[{analyzer_hosts}]",
                    "OTEL_PERF_JAEGER_OTLP_ENDPOINT": f"{loopback}:{ports.jaeger_otlp_grpc}",
                    "OTEL_PERF_JAEGER_URL": jaeger_url,
                    "OTEL_PERF_ALERTMANAGER_URL": alertmanager_url,
                    "OTEL_PERF_ALERT_RECORDS_FILE": str(state / "alert-records.jsonl"),
                    **self.collector_env,
                },
                f"http://{loopback}:{ports.collector_health}/",
                f"OTLP gRPC {loopback}:{ports.otlp_grpc}, HTTP http://{loopback}:{ports.otlp_http}",
            )
        )
        return services

    def _binary(self, name: str) -> Path:
        if name not in self.binaries:
            self.binaries[name] = toolchain.binary_path(name)
        return self.binaries[name]

    def service(self, name: str) -> Service:
        return next(service for service in self.services() if service.name == name)

    # --- lifecycle --------------------------------------------------------------------------------

    def build(self, progress: toolchain.Progress | None = None) -> None:
        self.binaries.update(toolchain.ensure_binaries(STACK_BINARIES, progress=progress))

    def up(self, on_started: Callable[[Service], None] | None = None, timeout_s: float = 60.0) -> None:
        """Start every service not already running and wait until each is healthy."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "ports.json").write_text(
            json.dumps({"analyzers": self.analyzers, **asdict(self.ports)})
        )
        try:
            for service in self.services():
                self.start_service(service.name, timeout_s)
                if on_started is not None:
                    on_started(service)
        except BaseException:
            self.down()
            raise

    def start_service(self, name: str, timeout_s: float = 60.0) -> None:
        service = self.service(name)
        if self._pid(service) is not None:
            return
        with service.log_path(self.state_dir).open("ab") as log:
            process = subprocess.Popen(
                service.argv,
                env=service.env,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the shell that ran `rig up`
            )
        service.pid_path(self.state_dir).write_text(str(process.pid))
        deadline = time.monotonic() + timeout_s
        while not _healthy(service.health_url):
            if process.poll() is not None or time.monotonic() > deadline:
                reason = (
                    f"exited with {process.returncode}"
                    if process.poll() is not None
                    else "never became healthy"
                )
                tail = service.log_path(self.state_dir).read_text(errors="replace")[-3000:]
                raise RigError(f"{service.name} {reason} ({service.health_url}); its log:\n{tail}")
            time.sleep(0.2)

    def stop_service(self, name: str, timeout_s: float = 15.0) -> None:
        service = self.service(name)
        pid = self._pid(service)
        service.pid_path(self.state_dir).unlink(missing_ok=True)
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
            psutil.Process(pid).wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass

    def down(self) -> None:
        """Stop everything, collector first (so nothing is sent to a stopped backend)."""
        for service in reversed(self.services()):
            self.stop_service(service.name)

    def status(self) -> list[ServiceStatus]:
        result = []
        for service in self.services():
            pid = self._pid(service)
            result.append(
                ServiceStatus(
                    service.name,
                    pid,
                    pid is not None,
                    pid is not None and _healthy(service.health_url),
                    service.endpoint,
                )
            )
        return result

    def _pid(self, service: Service) -> int | None:
        """The service's pid if it still runs that service's program (pids get reused)."""
        try:
            pid = int(service.pid_path(self.state_dir).read_text())
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            command = " ".join(process.cmdline())
        except (OSError, ValueError, psutil.Error):
            return None
        program = Path(service.argv[0]).name if service.argv[0] != sys.executable else "otel_perf.cli"
        return pid if program in command else None

    @classmethod
    def from_state(cls, state_dir: Path) -> Stack:
        """The stack a previous `rig up` started (its ports and analyzer count)."""
        saved = (
            json.loads((state_dir / "ports.json").read_text()) if (state_dir / "ports.json").exists() else {}
        )
        analyzers = int(saved.pop("analyzers", 1))
        return cls(state_dir, StackPorts(**saved) if saved else StackPorts(), analyzers)


def _healthy(url: str) -> bool:
    try:
        # Like kubelet's HTTPS probes, unverified: it sends nothing secret and only asks whether the
        # process it started answers (an analyzer with TLS has a certificate of the user's own CA).
        return httpx.get(url, timeout=1, verify=False).status_code == 200
    except httpx.HTTPError:
        return False
