"""Every error otel-perf raises on purpose, in one hierarchy. Messages say what is wrong and what to
do; none carries a secret (a webhook URL, a literal).

    OtelPerfError                      (otel_perf.processors.errors: the core's base and errors)
    ├── SettingsError                  an OTEL_PERF_* value can't be used; names the variable
    ├── OtlpFormatError                not OTLP: HTTP 400 / gRPC INVALID_ARGUMENT, a named bad line
    │   └── UnsupportedMediaType       neither protobuf nor JSON: HTTP 415
    ├── RequestTooLarge                over OTEL_PERF_ANALYZER_MAX_REQUEST_BYTES: 413 / RESOURCE_EXHAUSTED
    ├── Unavailable                    the analyzer's way back is full: 503 / UNAVAILABLE, retry later
    ├── WebhookError                   delivery to the webhook failed (never names the URL)
    ├── ChannelError                   an Apprise channel did not take the alert (scheme and host only)
    ├── DemoError                      `otel-perf demo` could not run the bundled app
    ├── RigError                       a service of the local stack did not start (tail of its log)
    └── ToolchainError                 a binary can't be built or found (what failed, what to do)
"""

from __future__ import annotations

from otel_perf.processors.errors import OtelPerfError, OtlpFormatError, SettingsError

__all__ = [
    "ChannelError",
    "DemoError",
    "OtelPerfError",
    "OtlpFormatError",
    "RequestTooLarge",
    "RigError",
    "SettingsError",
    "ToolchainError",
    "Unavailable",
    "UnsupportedMediaType",
    "WebhookError",
]


class UnsupportedMediaType(OtlpFormatError):
    """A Content-Type other than OTLP's protobuf and JSON."""


class RequestTooLarge(OtelPerfError):
    """A request (or its decompressed body) over the configured limit."""


class Unavailable(OtelPerfError):
    """The way back to the collector is full: the sender should retry."""


class WebhookError(OtelPerfError):
    """Delivery to the webhook failed (the message never contains the URL)."""


class ChannelError(OtelPerfError):
    """An Apprise channel (e-mail, Slack, …) did not take the alert: retried by the outbox. Names the
    channel by scheme and host only (its URL carries credentials)."""


class DemoError(OtelPerfError):
    """`otel-perf demo` could not run the bundled app."""


class RigError(OtelPerfError):
    """A service of the stack did not start; the message carries the tail of its log."""


class ToolchainError(OtelPerfError):
    """A binary can't be provided; the message says what failed and what to do about it."""
