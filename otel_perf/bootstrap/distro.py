"""The OpenTelemetry distro: defaults that make `opentelemetry-instrument python main.py` export
traces, metrics and logs over OTLP with no other setting, and a loud warning when an installed
library is outside what its instrumentation supports."""

from __future__ import annotations

import os

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]  # (upstream: "type: ignore")

from otel_perf.bootstrap.checks import warn_about_skipped_instrumentations
from otel_perf.log_setup import ensure_stderr_logging

OTLP_DEFAULTS = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
}


class OtelPerfDistro(BaseDistro):  # type: ignore[misc]  # BaseDistro is untyped upstream
    """Selected by the launcher as the first `opentelemetry_distro` entry point, or by
    `OTEL_PYTHON_DISTRO=otel_perf` when `opentelemetry-distro` is installed too."""

    def _configure(self, **kwargs: object) -> None:
        for name, value in OTLP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        ensure_stderr_logging()
        warn_about_skipped_instrumentations()
