"""The errors of the analysis core, under the one base every otel-perf error derives from
(`otel_perf.errors` documents the whole hierarchy). Messages name what is wrong and what to do."""

from __future__ import annotations


class OtelPerfError(Exception):
    """Base of every error otel-perf raises on purpose."""


class SettingsError(OtelPerfError, ValueError):
    """An `OTEL_PERF_*` value that cannot be used; the message names the variable."""


class OtlpFormatError(OtelPerfError, ValueError):
    """Telemetry that is not valid OTLP (not JSON or protobuf, wrong shape, ids of the wrong length).
    The analyzer answers it with HTTP 400 / gRPC INVALID_ARGUMENT; `otel-perf analyze` names the line."""
