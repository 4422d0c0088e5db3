"""Where alerts go: OTLP (an alert span and a log record, forwarded by the collector), a JSONL
file, a webhook (Slack-compatible), the console.

A sink only delivers; the router decides what to send and contains a sink's failures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.instrumentation.utils import suppress_instrumentation
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from otel_perf.alerting.alert import Alert, Sink
from otel_perf.errors import WebhookError
from otel_perf.processors import semconv
from otel_perf.processors.config import Section
from otel_perf.processors.findings import Severity

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.trace import TracerProvider


logger = logging.getLogger("otel_perf.alerting")


class SinkSettings(Section):
    """`OTEL_PERF_ALERTS_*`: where alerts are delivered."""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_ALERTS_")

    file: Path | None = Field(None, description="Append alerts as JSON lines to this file.")
    webhook_url: SecretStr | None = Field(
        None, description="POST each alert as JSON (with a Slack `text` field)."
    )
    webhook_timeout_s: float = Field(5, gt=0, description="Per attempt (the outbox retries with backoff).")
    console: bool = Field(False, description="Print alerts to stderr.")
    otlp: bool = Field(True, description="Send alerts over OTLP: a perf.alert span and a log record.")

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _webhook_url(cls, value: Any) -> Any:
        """Empty means unset; only http(s) (urllib would also open file: and ftp: URLs)."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str):
            if not text.strip():
                return None
            if urlsplit(text.strip()).scheme.lower() not in ("http", "https"):
                raise ValueError("must be an http:// or https:// URL")
            return text.strip()
        return value


def build_sinks(settings: SinkSettings, otlp: Sink | None = None) -> list[Sink]:
    """The sinks the settings ask for; one that can't start (unwritable file) is reported and left out.

    `otlp` replaces the default OTLP sink (which uses the global providers), e.g. in the analyzer."""
    sinks: list[Sink] = []
    if settings.otlp:
        sinks.append(otlp or OtlpSink())
    if settings.file is not None:
        try:
            sinks.append(FileSink(settings.file))
        except OSError as error:
            reason = error.strerror or str(error)
            if not settings.file.parent.is_dir():
                reason = f"its directory {settings.file.parent} does not exist; create it or fix the path"
            logger.error(
                "otel-perf: OTEL_PERF_ALERTS_FILE=%s can't be written (%s); file sink off",
                settings.file,
                reason,
            )
    if settings.webhook_url is not None:
        sinks.append(WebhookSink(settings.webhook_url.get_secret_value(), settings.webhook_timeout_s))
    if settings.console:
        sinks.append(ConsoleSink())
    return sinks


def slack_text(alert: Alert) -> str:
    finding = alert.finding
    repeat = f" (×{alert.occurrences})" if alert.occurrences > 1 else ""
    return f"[{finding.severity.label.upper()}] {finding.title}{repeat} — {finding.service}"


class FileSink:
    """JSON lines, one alert per line, appended and flushed per alert."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)  # its directory must exist: a typo in the path creates nothing
        self.destination = f"file:{self.path.resolve()}"
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def send(self, alert: Alert) -> None:
        line = json.dumps(alert.to_json(), separators=(",", ":"), default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class WebhookSink:
    """POST JSON: the alert's fields plus `text` (what Slack incoming webhooks display).

    The URL usually embeds a secret token, so it is never logged, and the POST runs with
    OpenTelemetry instrumentation suppressed: otherwise the app's own HTTP-client instrumentation
    would export it as `url.full` to the collector and Jaeger. The standard library's client is
    used because it logs nothing (httpx logs every request URL at INFO)."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self._url = url  # never logged: it usually embeds a secret token
        self.destination = "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:16]
        self._timeout_s = timeout_s

    def send(self, alert: Alert) -> None:
        """One attempt: the router's outbox retries with backoff, and keeps the alert meanwhile."""
        body = json.dumps({"text": slack_text(alert), **alert.to_json()}, default=str).encode()
        status, problem = self._post(body, alert.key)
        if status is not None and status < 300:
            return
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            raise WebhookError(f"webhook rejected the alert: HTTP {status}")
        raise WebhookError(f"webhook unreachable: {problem}")

    def _post(self, body: bytes, key: str = "") -> tuple[int | None, str]:
        """(response status, problem): the status is None when no response came."""
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        request = urllib.request.Request(self._url, data=body, method="POST", headers=headers)
        with suppress_instrumentation():
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as reply:
                    reply.read()
                    return reply.status, f"HTTP {reply.status}"
            except urllib.error.HTTPError as error:
                error.close()
                return error.code, f"HTTP {error.code}"
            except (OSError, ValueError) as error:  # URLError, timeouts, refused, a malformed URL
                return None, type(getattr(error, "reason", error)).__name__

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class ConsoleSink:
    """One line per alert on stderr, the severity coloured where stderr is a terminal (and
    `NO_COLOR` is unset). Plain text: titles quote SQL (`[dbo].[orders]`) and URLs."""

    name = "console"
    _COLOURS = {Severity.LOW: "36", Severity.MEDIUM: "33", Severity.HIGH: "31", Severity.CRITICAL: "1;31"}

    def __init__(self) -> None:
        self._colour = sys.stderr.isatty() and "NO_COLOR" not in os.environ
        self.destination = f"console:{os.getpid()}"  # a stopped process's terminal is gone

    def send(self, alert: Alert) -> None:
        finding = alert.finding
        label = f"otel-perf {finding.severity.label.upper()}"
        if self._colour:
            label = f"\x1b[{self._COLOURS[finding.severity]}m{label}\x1b[0m"
        print(f"{label} {finding.title}", file=sys.stderr, flush=True)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


_LOG_SEVERITY = {Severity.LOW: 9, Severity.MEDIUM: 13, Severity.HIGH: 17, Severity.CRITICAL: 21}


def alert_attributes(alert: Alert) -> dict[str, Any]:
    """The alert as flat OpenTelemetry attributes: the contract's scalars, `details.*` scalars."""
    finding = alert.finding
    attributes: dict[str, Any] = {
        semconv.PERF_ISSUE: finding.type,
        semconv.PERF_SEVERITY: finding.severity.label,
        semconv.PERF_FINGERPRINT: finding.fingerprint,
        "title": finding.title,
        "service": finding.service,
        "operation": finding.operation,
        "source": finding.source,
        "occurrences": alert.occurrences,
    }
    if finding.trace_id:
        attributes["trace_id"] = finding.trace_id
    if finding.span_ids:
        attributes["span_ids"] = ",".join(finding.span_ids[:20])
    for key, value in finding.details.items():
        if isinstance(value, (str, bool, int, float)):
            attributes[f"{semconv.ALERT_DETAILS_PREFIX}{key}"] = value
        elif isinstance(value, dict):
            for inner_key, inner in value.items():
                if isinstance(inner, (str, bool, int, float)):
                    attributes[f"{semconv.ALERT_DETAILS_PREFIX}{key}.{inner_key}"] = inner
    return attributes


class OtlpSink:
    """Alerts as OpenTelemetry data, so they travel the same pipeline as the traces:

    - a `perf.alert` span, child of the offending trace's root, with one event per alert (the
      collector's alertmanager exporter turns span events into Alertmanager alerts, and Jaeger
      shows the span inside the trace);
    - a log record (event name `perf.alert`) for logs backends and the collector's file exporter.

    Providers default to the global ones, looked up at send time: the configurator builds this
    sink before the SDK installs its providers.
    """

    name = "otlp"

    def __init__(
        self, tracer_provider: TracerProvider | None = None, logger_provider: LoggerProvider | None = None
    ) -> None:
        self._tracer_provider = tracer_provider
        self._logger_provider = logger_provider
        # Alerts are exported under the service's own resource: one service's never go out as another's.
        resource = getattr(tracer_provider, "resource", None)
        if resource is None:
            from opentelemetry.sdk.resources import Resource

            resource = Resource.create()  # what the SDK will build from OTEL_SERVICE_NAME, …
        self.destination = f"otlp:{resource.attributes.get('service.name', 'unknown_service')}"

    def send(self, alert: Alert) -> None:
        from opentelemetry import trace
        from opentelemetry._logs import SeverityNumber, get_logger_provider
        from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

        finding = alert.finding
        context = None
        if finding.trace_id and finding.root_span_id:
            parent = SpanContext(
                int(finding.trace_id, 16), finding.root_span_id, is_remote=False, trace_flags=TraceFlags(1)
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        attributes = alert_attributes(alert)
        timestamp = finding.time_ns or time.time_ns()
        tracer = (self._tracer_provider or trace.get_tracer_provider()).get_tracer("otel_perf.alerts")
        span = tracer.start_span(
            semconv.ALERT_SPAN_NAME,
            context=context,
            kind=SpanKind.INTERNAL,
            attributes={semconv.PERF_ISSUE: finding.type, semconv.PERF_SEVERITY: finding.severity.label},
            start_time=timestamp,
        )
        span.add_event(finding.alert_name, attributes=attributes, timestamp=timestamp)
        span.end(end_time=timestamp)
        otel_logger = (self._logger_provider or get_logger_provider()).get_logger("otel_perf.alerts")
        otel_logger.emit(
            timestamp=timestamp,
            context=context,
            severity_number=SeverityNumber(_LOG_SEVERITY[finding.severity]),
            severity_text=finding.severity.label.upper(),
            body=finding.title,
            attributes={**attributes, semconv.ALERT_JSON: json.dumps(alert.to_json(), default=str)},
            event_name=semconv.ALERT_SPAN_NAME,
        )

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
