"""Whether an OpenTelemetry collector answers at the OTLP endpoint, said once, and an exit that does
not wait for one that doesn't.

With no collector, the OTLP exporters log every retry (one long line each, a dozen in half a
minute) and, at exit, retry each batch for up to `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s), signal after
signal: Ctrl+C took 15-20 s. Here, in a process otel-perf configured:

- a start-up probe (a TCP connect, off the main thread) and the exporters' own log lines tell that
  no collector answers; one line says so, naming the endpoint and the fixes, instead of the
  exporters' per-retry lines (a filter on their loggers drops those lines, and only those);
- a successful export says the collector is back (one line);
- while none answers, alerts also print on the console when nothing else shows them to a person;
- at exit, the endpoints are probed again: exporters whose collector does not answer are shut down
  first, so their final export gives up at once. A collector that answers gets everything, as
  without otel-perf.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

logger = logging.getLogger("otel_perf.bootstrap")

SIGNALS = ("traces", "metrics", "logs")
_OTLP_EXPORTERS = {"otlp", "otlp_proto_grpc", "otlp_proto_http"}
_DEFAULT_PORTS = {"grpc": 4317, "http": 4318}
_START_PROBE_S = 1.0
_EXIT_PROBE_S = 0.5
_CONSOLE_WAIT_S = 2.0  # an alert raised before the start-up probe answered waits this long for it
_REPEAT_DOWN_S = 300.0  # a collector that flaps is said to be gone at most this often

# Where the OTLP exporters log their retries: the gRPC exporters' shared mixin, the HTTP exporters
# (older releases log per signal, newer ones through a shared client). The modules of the exporter
# classes actually built are added (`CollectorWatch.track`).
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.common.http",
)
# Status codes and error names that mean nobody answers at the endpoint (not a refusal by a
# collector that does answer: those lines stay).
_UNREACHABLE_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
_UNREACHABLE_ERRORS = ("ConnectionError", "NewConnectionError", "MaxRetryError", "Timeout", "ConnectTimeout")


@dataclass(frozen=True)
class Endpoint:
    """Where one signal is exported over OTLP."""

    signal: str
    protocol: str  # grpc or http
    host: str
    port: int

    @property
    def address(self) -> str:
        """host:port, what a person recognises (never a path, query or credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def otlp_endpoints(environ: Mapping[str, str]) -> dict[str, Endpoint]:
    """The OTLP endpoint of each signal exported over OTLP, read as the SDK reads it
    (`OTEL_<SIGNAL>_EXPORTER`, `OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL` and `_ENDPOINT`)."""
    endpoints = {}
    for signal in SIGNALS:
        upper = signal.upper()
        names = {name.strip() for name in environ.get(f"OTEL_{upper}_EXPORTER", "").split(",")}
        otlp = names & _OTLP_EXPORTERS
        if not otlp:
            continue
        protocol = (
            environ.get(f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or ""
        ).strip()
        if "otlp_proto_http" in otlp or (protocol.startswith("http") and "otlp_proto_grpc" not in otlp):
            kind = "http"
        else:
            kind = "grpc"
        url = (
            environ.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")
            or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or f"http://localhost:{_DEFAULT_PORTS[kind]}"
        ).strip()
        endpoint = _parse(signal, kind, url)
        if endpoint is not None:
            endpoints[signal] = endpoint
    return endpoints


def _parse(signal: str, kind: str, url: str) -> Endpoint | None:
    try:
        parts = urlsplit(url if "//" in url else "//" + url)
        host = parts.hostname or "localhost"
        port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme == "http" else 0)
    except ValueError:  # a malformed endpoint: the exporter itself says so
        return None
    return Endpoint(signal, kind, host, port or _DEFAULT_PORTS[kind])


def probe(endpoint: Endpoint, timeout_s: float) -> str | None:
    """None when something accepts connections at the endpoint, else why not (in words)."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s):
            return None
    except ConnectionRefusedError:
        return "connection refused"
    except socket.gaierror:
        return f"unknown host {endpoint.host}"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as error:
        return (error.strerror or type(error).__name__).lower()


def _unreachable_reason(record: logging.LogRecord) -> str | None:
    """Why the exporter could not reach the collector, when `record` is one of its retry or
    failure lines for that reason; None for any other line."""
    template = str(record.msg)
    if not template.startswith(("Transient error", "Failed to export")):
        return None
    args = record.args if isinstance(record.args, tuple) else ()
    for arg in args:
        code = getattr(arg, "name", None)
        if code in _UNREACHABLE_CODES:
            details = " ".join(str(other) for other in args)
            if "refused" in details.lower():
                return "connection refused"
            return "no answer in time" if code == "DEADLINE_EXCEEDED" else "unavailable"
        if isinstance(arg, BaseException) and (
            isinstance(arg, OSError) or type(arg).__name__.endswith(_UNREACHABLE_ERRORS)
        ):
            return "connection refused" if "refused" in str(arg).lower() else "connection failed"
    return None


class _ExportNoise(logging.Filter):
    """Drops the OTLP exporters' lines about a collector that does not answer (each retry, each
    failed batch, the retries cut short at exit); `CollectorWatch` says it once instead. Every other
    line of theirs (a collector that refuses data, bad credentials, …) passes."""

    def __init__(self, watch: CollectorWatch) -> None:
        super().__init__("otel-perf")
        self._watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            reason = _unreachable_reason(record)
            if reason is not None:
                self._watch.exporter_failed(reason)
                return False
            template = str(record.msg)
            if self._watch.abandoned and template.startswith(
                ("Transient error", "Failed to export", "Exporter already shutdown", "OTLP client already")
            ):
                return False
            down = self._watch.state == DOWN or self._watch.abandoned
            return not (
                down
                and template.startswith(("Shutdown in progress", "Failed to export %s batch due to timeout"))
            )
        except Exception:  # a filter that raises would lose the line: let it through
            return True


UNKNOWN, UP, DOWN = "unknown", "up", "down"


class CollectorWatch:
    """What otel-perf knows of the collector of this process: unknown until the start-up probe or
    an export says, then up or down. One line per change (a start-up probe that finds it up says
    nothing: that is what is expected)."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        *,
        quiet: bool = False,
        analysis_here: bool = True,
        silent: bool = False,
    ) -> None:
        """`quiet`: no line when the collector is back (the warning that none answers stays);
        `analysis_here`: whether this process analyses (else the analyzer behind the collector
        does, and sees nothing while none answers); `silent`: no line at all (a helper process
        such as multiprocessing's resource tracker: the app's own processes say it)."""
        self.endpoints = dict(endpoints)
        self.quiet = quiet
        self.silent = silent
        self.alerts_here = False  # alerts print on this console while no collector answers
        self._analysis_here = analysis_here
        self.state = UNKNOWN
        self.abandoned = False
        self._lock = threading.Lock()
        self._probed = threading.Event()
        self._last_down_said = -_REPEAT_DOWN_S
        self._outage_said = False  # this outage was said: its end is said too
        self._exporters: list[_WatchedExporter] = []
        self._filter = _ExportNoise(self)
        self._loggers: set[str] = set()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a thread may have held it at the fork

    @property
    def main(self) -> Endpoint | None:
        """The endpoint named in lines: the traces' one (where alerts and analysis go), else any."""
        return self.endpoints.get("traces") or next(iter(self.endpoints.values()), None)

    # --- set-up -------------------------------------------------------------------------------

    def start(self) -> None:
        """Filter the exporters' loggers and probe the collector in the background."""
        self.filter_loggers(EXPORTER_LOGGERS)
        if not self.endpoints:
            self._probed.set()
            return
        threading.Thread(target=self._probe_at_start, name="otel-perf-collector-probe", daemon=True).start()

    def filter_loggers(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self._loggers:
                self._loggers.add(name)
                logging.getLogger(name).addFilter(self._filter)

    def stop_at_exit(self) -> None:
        """Registered after the SDK's providers (which register theirs when built), so it runs
        before their shutdown: atexit runs handlers last in, first out."""
        atexit.register(self.at_exit)

    def _probe_at_start(self) -> None:
        try:
            endpoint = self.main
            reason = probe(endpoint, _START_PROBE_S) if endpoint is not None else None
            if reason is not None:
                self.exporter_failed(reason)
            else:
                with self._lock:
                    if self.state == UNKNOWN:
                        self.state = UP
        except Exception:
            logger.debug("otel-perf: probing the collector failed", exc_info=True)
        finally:
            self._probed.set()

    def track(self, exporter: Any, signal: str) -> Any:
        """The exporter, watched (its successes say the collector is back; at exit it can be cut
        short); only OTLP exporters are, any other is returned as it is."""
        if not type(exporter).__module__.startswith("opentelemetry.exporter.otlp"):
            return exporter
        self.filter_loggers(cls.__module__ for cls in type(exporter).__mro__)
        watched = _WatchedExporter(exporter, signal, self)
        self._exporters.append(watched)
        return watched

    def track_metric_readers(self, provider: Any) -> None:
        """Watch the OTLP exporters of the SDK meter provider's periodic readers (SDK internals,
        read defensively: the provider's `_metric_readers` or `_sdk_config.metric_readers`, each
        reader's `_exporter`, which it reads at each export and at shutdown)."""
        readers = (
            getattr(provider, "_metric_readers", None)
            or getattr(getattr(provider, "_sdk_config", None), "metric_readers", None)
            or ()
        )
        for reader in readers:
            exporter = getattr(reader, "_exporter", None)
            if exporter is not None and not isinstance(exporter, _WatchedExporter):
                watched = self.track(exporter, "metrics")
                if watched is not exporter:
                    reader._exporter = watched

    # --- what is known ------------------------------------------------------------------------

    def exporter_failed(self, reason: str) -> None:
        """No collector answered (the start-up probe, or an exporter's retry line)."""
        now = time.monotonic()
        with self._lock:
            if self.state == DOWN:
                return
            self.state = DOWN
            say = now - self._last_down_said >= _REPEAT_DOWN_S
            if say:
                self._last_down_said = now
            self._outage_said = say
        if say:
            logger.log(logging.DEBUG if self.silent else logging.WARNING, "%s", self.down_line(reason))

    def exporter_succeeded(self) -> None:
        with self._lock:
            said = self.state == DOWN and self._outage_said
            self.state = UP
            self._outage_said = False
        if said and self.main is not None and not (self.quiet or self.silent):
            here = " (alerts no longer print here)" if self.alerts_here else ""
            logger.info(
                "otel-perf: the collector at %s answers again; exporting resumed%s", self.main.address, here
            )

    def down_line(self, reason: str) -> str:
        endpoint = self.main
        where = endpoint.address if endpoint is not None else "the OTLP endpoint"
        if self._analysis_here:
            lost = "traces, metrics and logs are not exported"
            lost += " (alerts print here meanwhile)" if self.alerts_here else ""
        else:
            lost = "nothing is exported, and the analyzer behind the collector sees nothing"
        return (
            f"otel-perf: no OpenTelemetry collector answers at {where} ({reason}): {lost}. "
            "Fix: start one (otel-perf rig up), point OTEL_EXPORTER_OTLP_ENDPOINT at yours, or export "
            "nothing (OTEL_TRACES_EXPORTER=none OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none)."
        )

    def collector_missing(self) -> bool:
        """Whether alerts should print here: no collector answers (waiting briefly for the start-up
        probe when it has not answered yet). Runs on the console sink's worker, never the app's."""
        if self.state == UNKNOWN:
            self._probed.wait(_CONSOLE_WAIT_S)
        return self.state == DOWN

    # --- exit ---------------------------------------------------------------------------------

    def at_exit(self) -> None:
        """Shut down first the exporters whose collector does not answer now: their retries stop
        and the providers' final flush gives up at once. Never raises (it runs in atexit)."""
        try:
            reasons: dict[Endpoint, str | None] = {}
            for watched in self._exporters:
                endpoint = self.endpoints.get(watched.signal)
                if endpoint is None:
                    continue
                if endpoint not in reasons:
                    reasons[endpoint] = probe(endpoint, _EXIT_PROBE_S)
                if reasons[endpoint] is not None:
                    self.abandoned = True
                    watched.abandon()
        except Exception:
            logger.debug("otel-perf: cutting exports short at exit failed", exc_info=True)


class _WatchedExporter:
    """An OTLP exporter as the SDK's processors and readers see it: every call goes to it; a
    success says the collector answers; `abandon` shuts it down ahead of the SDK's own shutdown."""

    def __init__(self, inner: Any, signal: str, watch: CollectorWatch) -> None:
        self._inner = inner
        self.signal = signal
        self._watch = watch
        self._abandoned = False

    def export(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = self._inner.export(batch, *args, **kwargs)
        except Exception:
            if not self._abandoned:
                raise
            return _failure(self.signal)  # the channel closed under an export in flight
        if getattr(result, "name", None) == "SUCCESS":
            self._watch.exporter_succeeded()
        return result

    def abandon(self) -> None:
        if not self._abandoned:
            self._abandoned = True
            self._inner.shutdown()

    def shutdown(self, *args: Any, **kwargs: Any) -> Any:
        if self._abandoned:
            return None
        return self._inner.shutdown(*args, **kwargs)

    def force_flush(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.force_flush(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _failure(signal: str) -> Any:
    """The SDK's FAILURE result for the signal's exporters."""
    if signal == "traces":
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.FAILURE
    if signal == "metrics":
        from opentelemetry.sdk.metrics.export import MetricExportResult

        return MetricExportResult.FAILURE
    from opentelemetry.sdk._logs import export as logs_export

    result = getattr(logs_export, "LogRecordExportResult", None) or logs_export.LogExportResult
    return result.FAILURE
