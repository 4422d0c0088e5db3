"""Where alerts go: OTLP (an alert span and a log record, forwarded by the collector), a JSONL
file, a webhook (Slack-compatible), the console, and chat, paging and e-mail channels through
Apprise (`OTEL_PERF_ALERTS_APPRISE_URLS`: one well-kept library for Slack, Teams, PagerDuty, SMTP and
a hundred more, rather than a hand-written client each).

A sink only delivers; the router decides what to send and contains a sink's failures.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

from opentelemetry.instrumentation.utils import suppress_instrumentation
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from otel_perf.alerting.alert import Alert, Sink
from otel_perf.errors import ChannelError, WebhookError
from otel_perf.processors import semconv
from otel_perf.processors.config import Section
from otel_perf.processors.findings import Severity

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.trace import TracerProvider


logger = logging.getLogger("otel_perf.alerting")

APPRISE_VARIABLE = "OTEL_PERF_ALERTS_APPRISE_URLS"
APPRISE_MISSING = (
    f"otel-perf: {APPRISE_VARIABLE} is set but apprise is not installed: "
    "pip install 'otel-perf[channels]'; those channels are off"
)
# One Apprise URL from the next: whitespace, or a comma before the next `scheme://` (a comma inside
# a URL, `mailto://…?to=a@x.com,b@x.com`, stays).
_URL_SPLIT = re.compile(r"\s+|,(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")
_URL_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_MIN_SEVERITY_PARAM = re.compile(r"(?:^|&)min_severity=([^&]*)", re.IGNORECASE)


def parse_channels(text: str) -> list[tuple[str, Severity]]:
    """`OTEL_PERF_ALERTS_APPRISE_URLS` as (Apprise URL, minimum severity) pairs: URLs separated by
    spaces or commas, each with an optional `min_severity=` query parameter, ours, removed from the
    URL Apprise gets. A ValueError names a URL by its position and scheme only (URLs hold secrets)."""
    channels: list[tuple[str, Severity]] = []
    for position, url in enumerate((part for part in _URL_SPLIT.split(text.strip()) if part), 1):
        scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        where = f"URL {position}" + (f" ({scheme}://…)" if scheme.isascii() and scheme.isalnum() else "")
        if not _URL_SHAPE.fullmatch(url):
            raise ValueError(
                f"{where} is not an Apprise URL (scheme://…, e.g. mailto://user:pass@smtp.example.com"
                "?to=ops@example.com or slack://TokenA/TokenB/TokenC)"
            )
        head, _, query = url.partition("?")
        severity = Severity.LOW
        found = _MIN_SEVERITY_PARAM.findall(query)
        if len(found) > 1:
            raise ValueError(f"{where} has min_severity twice")
        if found:
            try:
                severity = Severity.parse(unquote(found[0]))
            except ValueError:
                raise ValueError(f"{where}: min_severity must be low, medium, high or critical") from None
            query = _MIN_SEVERITY_PARAM.sub("", query).lstrip("&")
        url = f"{head}?{query}" if query else head
        if any(url == known for known, _ in channels):
            raise ValueError(f"{where} repeats an earlier URL (each channel once)")
        channels.append((url, severity))
    return channels


def _parse_severity(value: Any) -> Any:
    return Severity.parse(value) if isinstance(value, str) else value


class SinkSettings(Section):
    """`OTEL_PERF_ALERTS_*`: where alerts are delivered; and what a person sees of them and of
    otel-perf on the console (`OTEL_PERF_TRACE_URL`, `OTEL_PERF_QUIET`: named as the whole of
    otel-perf's, not only the sinks', output)."""

    # Fields named outside the section's prefix (`validation_alias`); errors name the field
    # (`loc_by_alias=False`), which `env_name` turns into the variable.
    model_config = SettingsConfigDict(
        env_prefix="OTEL_PERF_ALERTS_", populate_by_name=True, loc_by_alias=False
    )
    _VARIABLES: ClassVar[dict[str, str]] = {"trace_url": "OTEL_PERF_TRACE_URL", "quiet": "OTEL_PERF_QUIET"}

    file: Path | None = Field(None, description="Append alerts as JSON lines to this file.")
    webhook_url: SecretStr | None = Field(
        None, description="POST each alert as JSON (with a Slack `text` field)."
    )
    webhook_timeout_s: float = Field(5, gt=0, description="Per attempt (the outbox retries with backoff).")
    webhook_min_severity: Severity = Field(
        Severity.LOW,
        description="The webhook gets alerts of this severity and above: low, medium, high "
        "or critical (on top of OTEL_PERF_ALERTS_MIN_SEVERITY).",
    )
    apprise_urls: SecretStr | None = Field(
        None,
        description="Chat, paging and e-mail channels through Apprise (`pip install "
        "'otel-perf[channels]'`): Apprise URLs separated by spaces or commas, e.g. "
        "`mailto://user:pass@smtp.example.com?to=ops@example.com slack://T/B/C?min_severity=high`. Each "
        "is its own channel (retried on its own); `min_severity=` (low, medium, high, critical) routes "
        "by severity. Never logged: messages name a channel by scheme and host.",
    )
    console: bool | None = Field(
        None,
        description="Print alerts to stderr (severity, endpoint, code location, fix, trace link). Unset: "
        "only while no collector answers (or traces are not exported over OTLP) and no file or "
        "webhook sink is set, so that a developer running locally sees findings.",
    )
    otlp: bool = Field(True, description="Send alerts over OTLP: a perf.alert span and a log record.")
    trace_url: str | None = Field(
        None,
        validation_alias="OTEL_PERF_TRACE_URL",
        description="Link to each alert's trace in the console, file and webhook alerts (`trace_url`): a "
        "template with {trace_id}, e.g. http://localhost:16686/trace/{trace_id} (Jaeger).",
    )
    quiet: bool = Field(
        False,
        validation_alias="OTEL_PERF_QUIET",
        description="true: no start-up line and no collector-is-back line on stderr (warnings, such as "
        "no collector answering, and alerts still print).",
    )

    @classmethod
    def env_name(cls, field: str) -> str:
        return cls._VARIABLES.get(field) or super().env_name(field)

    @field_validator("trace_url", mode="before")
    @classmethod
    def _trace_url(cls, value: Any) -> Any:
        """Blank means unset; a link a person can open, with the place of the trace id in it."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return None
        try:
            parts = urlsplit(text)
        except ValueError:
            parts = urlsplit("")
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "must be an http:// or https:// URL, e.g. http://localhost:16686/trace/{trace_id}"
            )
        if "{trace_id}" not in text:
            raise ValueError("must contain {trace_id}, e.g. http://localhost:16686/trace/{trace_id}")
        return text

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _webhook_url(cls, value: Any) -> Any:
        """Empty means unset; only http(s) with a host (urllib would also open file: and ftp: URLs,
        and `http://` alone fails only at the first alert, far from the variable)."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str):
            if not text.strip():
                return None
            try:
                parts = urlsplit(text.strip())
                parts.port  # noqa: B018  # raises on a port that is not a number from 0 to 65535
            except ValueError:
                raise ValueError("must be an http:// or https:// URL with a valid port") from None
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    "must be an http:// or https:// URL with a host, e.g. https://hooks.slack.com/…"
                )
            return text.strip()
        return value

    @field_validator("webhook_min_severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Any:
        return _parse_severity(value)

    @field_validator("apprise_urls")
    @classmethod
    def _apprise_urls(cls, value: SecretStr | None) -> SecretStr | None:
        """Blank means unset; each URL well formed, and one Apprise knows when it is installed (so a
        typo is reported at start-up, naming the variable, not at the first alert)."""
        if value is None or not value.get_secret_value().strip():
            return None
        channels = parse_channels(value.get_secret_value())
        try:
            import apprise  # noqa: F401
        except Exception:  # not installed (or broken): build_sinks says so, in one line
            return value
        for position, (url, _) in enumerate(channels, 1):
            _check_apprise_url(url, f"URL {position}")
        return value

    @field_validator("file", mode="before")
    @classmethod
    def _file(cls, value: Any) -> Any:
        """Blank means unset (not a file named by spaces in the working directory)."""
        return None if isinstance(value, str) and not value.strip() else value


def build_sinks(
    settings: SinkSettings, otlp: Sink | None = None, *, console_when: Callable[[], bool] | None = None
) -> list[Sink]:
    """The sinks the settings ask for; one that can't start (unwritable file) is reported and left out.

    `otlp` replaces the default OTLP sink (which uses the global providers), e.g. in the analyzer.
    `console_when`: with the console setting unset and no file or webhook sink, a console sink that
    prints while this returns True (the app's bootstrap: while no collector takes the alerts)."""
    sinks: list[Sink] = []
    trace_url = settings.trace_url
    if settings.otlp:
        sinks.append(otlp or OtlpSink())
    if settings.file is not None:
        try:
            sinks.append(FileSink(settings.file, trace_url))
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
        sinks.append(
            WebhookSink(
                settings.webhook_url.get_secret_value(),
                settings.webhook_timeout_s,
                trace_url,
                min_severity=settings.webhook_min_severity,
            )
        )
    if settings.apprise_urls is not None:
        sinks.extend(apprise_sinks(settings.apprise_urls.get_secret_value(), trace_url))
    if settings.console:
        sinks.append(ConsoleSink(trace_url))
    elif (
        settings.console is None
        and console_when is not None
        and not any(isinstance(sink, (FileSink, WebhookSink, AppriseSink)) for sink in sinks)
    ):
        sinks.append(ConsoleSink(trace_url, when=console_when))
    return sinks


def _printable(text: object) -> str:
    """One line of text for a terminal or a chat message: control characters (newlines, escape
    sequences from a span name) become spaces."""
    return "".join(char if char.isprintable() else " " for char in str(text))


def code_location(alert: Alert, relative: bool = False) -> str:
    """`/srv/app/main.py:93 in list_orders`, or "" without one. `relative`: the path relative to
    the working directory when it is under it (`main.py:93`; for the app's own console, where the
    app's paths are this process's)."""
    location = alert.finding.details.get("code_location")
    if not isinstance(location, dict) or not location.get("file"):
        return ""
    path = str(location["file"])
    if relative and os.path.isabs(path):
        cwd = os.getcwd()
        try:
            if cwd != os.sep and os.path.commonpath([cwd, path]) == cwd:
                path = os.path.relpath(path, cwd)
        except ValueError:  # another drive (Windows)
            pass
    where = f"{path}:{location['line']}" if location.get("line") else path
    function = location.get("function")
    return _printable(f"{where} in {function}" if function else where)


def _headline(alert: Alert) -> str:
    """The title, with the endpoint where the title does not name it, and the repeat count."""
    finding = alert.finding
    title = finding.title
    if finding.operation and finding.operation not in title:
        title += f" in {finding.operation}"
    repeat = f" (×{alert.occurrences})" if alert.occurrences > 1 else ""
    return _printable(title + repeat)


def _action_lines(alert: Alert, trace_url: str | None, relative: bool = False) -> list[str]:
    """Where in the code, what to do, where to look: what a person acts on."""
    lines = []
    where = code_location(alert, relative)
    if where:
        lines.append(f"at {where}")
    suggestion = alert.finding.details.get("suggestion")
    if suggestion:
        lines.append(f"fix: {_printable(suggestion)}")
    link = alert.trace_link(trace_url)
    if link:
        lines.append(f"trace: {_printable(link)}")
    return lines


def slack_text(alert: Alert, trace_url: str | None = None) -> str:
    finding = alert.finding
    head = f"[{finding.severity.label.upper()}] {_headline(alert)} — {_printable(finding.service)}"
    return "\n".join([head, *_action_lines(alert, trace_url)])


def console_text(alert: Alert, trace_url: str | None = None, colour: bool = False) -> str:
    """The alert as the console sink prints it: the severity and title (with the endpoint), then
    indented: the code location, the fix, the trace link. Plain text: titles quote SQL
    (`[dbo].[orders]`) and URLs, nothing in them is markup."""
    label = f"otel-perf {alert.finding.severity.label.upper()}"
    if colour:
        label = f"\x1b[{ConsoleSink.COLOURS[alert.finding.severity]}m{label}\x1b[0m"
    return "\n".join(
        [
            f"{label} {_headline(alert)}",
            *(f"  {line}" for line in _action_lines(alert, trace_url, relative=True)),
        ]
    )


class FileSink:
    """JSON lines, one alert per line, appended and flushed per alert."""

    name = "file"

    def __init__(self, path: Path, trace_url: str | None = None) -> None:
        self.path = Path(path)  # its directory must exist: a typo in the path creates nothing
        self.destination = f"file:{self.path.resolve()}"
        self._trace_url = trace_url
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def send(self, alert: Alert) -> None:
        line = json.dumps(alert.to_json(self._trace_url), separators=(",", ":"), default=str)
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

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        trace_url: str | None = None,
        *,
        min_severity: Severity = Severity.LOW,
    ) -> None:
        self._url = url  # never logged: it usually embeds a secret token
        self.destination = "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:16]
        parts = urlsplit(url)
        self.host = parts.hostname or ""  # what may be shown: the host only, never the path's token
        self._timeout_s = timeout_s
        self._trace_url = trace_url
        self.min_severity = min_severity

    def send(self, alert: Alert) -> None:
        """One attempt: the router's outbox retries with backoff, and keeps the alert meanwhile.
        Below `min_severity`: nothing to send (delivered)."""
        if alert.finding.severity < self.min_severity:
            return
        body = json.dumps(
            {"text": slack_text(alert, self._trace_url), **alert.to_json(self._trace_url)}, default=str
        ).encode()
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
    """Each alert on stderr (`console_text`), the severity coloured where stderr is a terminal (and
    `NO_COLOR` is unset). `when`: print only while it returns True (the alert counts as delivered
    otherwise), e.g. only while no collector takes the alerts."""

    name = "console"
    COLOURS = {Severity.LOW: "36", Severity.MEDIUM: "33", Severity.HIGH: "31", Severity.CRITICAL: "1;31"}

    def __init__(self, trace_url: str | None = None, *, when: Callable[[], bool] | None = None) -> None:
        self._colour = sys.stderr.isatty() and "NO_COLOR" not in os.environ
        self.destination = f"console:{os.getpid()}"  # a stopped process's terminal is gone
        self._trace_url = trace_url
        self.when = when

    def send(self, alert: Alert) -> None:
        if self.when is not None and not self.when():
            return
        print(console_text(alert, self._trace_url, self._colour), file=sys.stderr, flush=True)

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


# --- Apprise: chat, paging and e-mail channels ------------------------------------------------------

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~])")


def _markdown_text(text: object) -> str:
    """Free text (a fix, a service name) as markdown that shows as written: SQL's `*` and `[dbo]`
    are not emphasis or links."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _printable(text))


def _markdown_code(text: object) -> str:
    return "`" + _printable(text).replace("`", "'") + "`"


def channel_message(alert: Alert, trace_url: str | None = None, markdown: bool = False) -> tuple[str, str]:
    """(title, body) of an alert for a person's channel: the severity and headline as the title;
    the severity, service, endpoint, code location, fix and trace link as the body, one per line.
    Plain text, or markdown (code in code spans, the rest escaped) for channels that render it."""
    finding = alert.finding
    state = "RESOLVED " if finding.resolved else ""
    title = f"[{state}{finding.severity.label.upper()}] {_headline(alert)}"
    facts: list[tuple[str, str, bool]] = [
        ("severity", finding.severity.label, False),
        ("service", finding.service, True),
        ("endpoint", finding.operation, True),
        ("at", code_location(alert), True),
        ("fix", str(finding.details.get("suggestion") or ""), False),
        ("trace", alert.trace_link(trace_url), False),
    ]
    lines = []
    for label, value, code in facts:
        if not value:
            continue
        if not markdown:
            lines.append(f"{label}: {_printable(value)}")
        elif label == "trace":
            lines.append(f"**{label}:** <{_printable(value)}>")
        else:
            shown = _markdown_code(value) if code else _markdown_text(value)
            lines.append(f"**{label}:** {shown}")
    if alert.occurrences > 1:
        lines.append(f"occurrences: {alert.occurrences}")
    return title, "\n".join(lines)


def _url_secrets(url: str, with_host: bool) -> set[str]:
    """Everything in an Apprise URL but its scheme (and host, unless `with_host`: Slack's and
    PagerDuty's "hosts" are tokens), as written and (un)quoted: what is redacted from Apprise's log
    records. Pieces under 3 characters are no secrets worth blanking every such letter for."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return {url, url.split("://", 1)[-1]}
    pieces = [url, url.split("://", 1)[-1], parts.netloc, parts.username, parts.password, parts.fragment]
    pieces += parts.path.split("/")
    for pair in parts.query.split("&"):
        pieces += pair.split("=", 1)[1:]
    if with_host:
        pieces.append(host)
    found: set[str] = set()
    for piece in pieces:
        if piece:
            found |= {piece, unquote(piece), quote(unquote(piece), safe=""), quote(unquote(piece), safe="@")}
    if not with_host:  # the host stays readable (it is what our messages name)
        found = {piece for piece in found if piece != host}
    return {piece for piece in found if len(piece) >= 3}


class _AppriseLogGuard(logging.Filter):
    """On the `apprise` logger (Apprise logs everything there; its debug lines carry URLs) and its
    HTTP client's (`_GUARDED_LOGGERS`). While a channel of ours calls Apprise, the call's records are
    held back and what they say (redacted) goes into our one line instead; any other record is let
    through, one that quotes a channel's secret with it blanked (`***`) and without its traceback
    (whose text may quote the URL too). "While a call runs" is a context variable: Apprise 2 runs a
    call on its pool in a copy of the caller's context, Apprise 1 in the calling thread."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._capture: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar(
            "otel_perf_apprise_capture", default=None
        )

    def add(self, secrets: set[str]) -> None:
        with self._lock:
            self._secrets |= secrets
            ordered = sorted(self._secrets, key=len, reverse=True)  # the longest first
            self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str, secrets: AbstractSet[str] = frozenset()) -> str:
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        pattern = self._pattern
        return pattern.sub("***", text) if pattern is not None else text

    def capture(self, secrets: set[str]) -> _Capture:
        return _Capture(self._capture, secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        capture = self._capture.get()
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: its format string alone
            text = str(record.msg)
        if capture is not None:
            if record.levelno >= logging.WARNING:
                capture.lines.append(" ".join(self.redact(text, capture.secrets).split()))
            return False
        redacted = self.redact(text)
        if redacted != text:  # the app's own records of these loggers are left as they are
            record.msg, record.args = redacted, None
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


class _Capture:
    """Apprise's warnings while one call of ours runs (see `_AppriseLogGuard`)."""

    def __init__(self, variable: contextvars.ContextVar[_Capture | None], secrets: set[str]) -> None:
        self._variable = variable
        self._token: contextvars.Token[_Capture | None] | None = None
        self.secrets = secrets
        self.lines: list[str] = []

    def __enter__(self) -> _Capture:
        self._token = self._variable.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            self._variable.reset(self._token)

    def reason(self) -> str:
        return f": {self.lines[-1]}" if self.lines else ""


_GUARD = _AppriseLogGuard()
# Apprise's logger, and those of the HTTP client under it (urllib3 logs each request's path at
# DEBUG: `"POST /hooks/<token> HTTP/1.1" 200`). A filter sees only its own logger's records.
_GUARDED_LOGGERS = (
    "apprise",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
)


def _guard_apprise_logs() -> None:
    for name in _GUARDED_LOGGERS:
        guarded = logging.getLogger(name)
        if _GUARD not in guarded.filters:
            guarded.addFilter(_GUARD)


def _check_apprise_url(url: str, where: str) -> Any:
    """Apprise's plugin for `url`, run in the calling thread (its `async_mode` off: the sink's
    worker is the thread, and OpenTelemetry's suppression reaches no pool); a ValueError naming
    only `where` and the scheme when Apprise does not know the URL."""
    import apprise

    _guard_apprise_logs()
    scheme = url.split("://", 1)[0].lower()
    with _GUARD.capture(_url_secrets(url, with_host=True)) as capture:
        try:
            plugin = apprise.Apprise.instantiate(url, asset=apprise.AppriseAsset(async_mode=False))
        except Exception as error:  # Apprise's own bug: a setting error, never one into the app
            raise ValueError(
                f"{where}: Apprise failed on this {scheme}:// URL ({type(error).__name__})"
            ) from None
    if plugin is None:
        raise ValueError(
            f"{where}: Apprise does not take this {scheme}:// URL{capture.reason()} (the URL formats: "
            "https://github.com/caronc/apprise/wiki)"
        )
    return plugin


def _shown_host(url: str, plugin: Any) -> str:
    """The URL's host when Apprise's own privacy form of the URL shows it (an SMTP or HTTP server);
    "" when that masks it (a token in the host's place, as Slack's)."""
    try:
        host = urlsplit(url).hostname or ""
        private = urlsplit(str(plugin.url(privacy=True))).hostname or ""
    except (ValueError, TypeError, AttributeError):
        return ""
    return host if host and host == private else ""


class AppriseSink:
    """One Apprise channel (one URL): each has its own outbox destination and worker, so a dead
    SMTP server delays no Slack message. Apprise's False (not delivered) is a failure the outbox
    retries. The URL carries credentials: it is never logged, the destination is its hash, and
    messages name the channel by scheme and host (`apprise mailto://smtp.example.com`)."""

    NOTIFY_TYPES = {
        Severity.LOW: "info",
        Severity.MEDIUM: "warning",
        Severity.HIGH: "failure",
        Severity.CRITICAL: "failure",
    }

    def __init__(
        self, url: str, trace_url: str | None = None, *, min_severity: Severity = Severity.LOW
    ) -> None:
        """Raises ImportError without apprise, ValueError for a URL Apprise does not take."""
        import apprise

        plugin = _check_apprise_url(url, "the URL")
        host = _shown_host(url, plugin)
        self._secrets = _url_secrets(url, with_host=not host)
        _GUARD.add(self._secrets)
        self.label = f"{url.split('://', 1)[0].lower()}://{host}"
        self.name = f"apprise {self.label}"
        self.destination = "apprise:" + hashlib.sha256(url.encode()).hexdigest()[:16]
        self.min_severity = min_severity
        self._trace_url = trace_url
        formats = plugin.notify_format
        first = formats[0] if isinstance(formats, (tuple, list)) else formats
        self._markdown = first == apprise.NotifyFormat.MARKDOWN
        self._format = apprise.NotifyFormat.MARKDOWN if self._markdown else apprise.NotifyFormat.TEXT
        self._apprise = apprise.Apprise(asset=plugin.asset)
        self._apprise.add(plugin)
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> None:
        """One attempt (Apprise's own retries are off by default: the outbox retries with backoff).
        Below `min_severity`: nothing to send (delivered). Instrumentation is suppressed, so the
        app's HTTP-client spans never carry the channel's URL."""
        finding = alert.finding
        if finding.severity < self.min_severity:
            return
        title, body = channel_message(alert, self._trace_url, self._markdown)
        kind = "success" if finding.resolved else self.NOTIFY_TYPES[finding.severity]
        with self._lock, suppress_instrumentation(), _GUARD.capture(self._secrets) as capture:
            try:
                delivered = self._apprise.notify(
                    body=body, title=title, notify_type=kind, body_format=self._format
                )
            except Exception as error:  # its text may quote the URL: the type alone
                raise ChannelError(f"{self.label}: Apprise failed ({type(error).__name__})") from None
        if not delivered:
            raise ChannelError(f"{self.label} did not take the alert{capture.reason()}")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def apprise_sinks(text: str, trace_url: str | None = None) -> list[Sink]:
    """A sink per URL of `OTEL_PERF_ALERTS_APPRISE_URLS`; without apprise installed, one line
    saying what to install and none (the app and the other sinks are unaffected)."""
    try:
        import apprise  # noqa: F401
    except ImportError:
        logger.error(APPRISE_MISSING)
        return []
    except Exception as error:  # installed but broken
        logger.error(
            "otel-perf: %s: apprise fails to import (%r); those channels are off", APPRISE_VARIABLE, error
        )
        return []
    try:
        channels = parse_channels(text)
    except ValueError as error:
        logger.error("otel-perf: %s is invalid: %s; those channels are off", APPRISE_VARIABLE, error)
        return []
    sinks: list[Sink] = []
    for position, (url, severity) in enumerate(channels, 1):
        try:
            sinks.append(AppriseSink(url, trace_url, min_severity=severity))
        except ValueError as error:
            reason = str(error).replace("the URL", f"URL {position}", 1)
            logger.error("otel-perf: %s: %s; that channel is off", APPRISE_VARIABLE, reason)
        except Exception as error:  # no exception of ours (or Apprise's) reaches the app
            logger.error(
                "otel-perf: %s: URL %d can't be set up (%s); that channel is off",
                APPRISE_VARIABLE,
                position,
                type(error).__name__,
            )
    return sinks
