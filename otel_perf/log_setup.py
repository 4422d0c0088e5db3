"""otel-perf's own log lines (warnings, bad settings, the start-up line) must reach stderr even in
apps that configure no logging: one handler on the `otel_perf` logger, not on the root.

Its level is OpenTelemetry's `OTEL_LOG_LEVEL` where set (`warning` hides the start-up line and other
INFO lines; `error` also the warnings), else INFO: the start-up line is printed before the app's own
code could set a level on the logger."""

from __future__ import annotations

import logging
import os

# OTEL_LOG_LEVEL's values (the specification's, and Python's names).
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def ensure_stderr_logging() -> None:
    package_logger = logging.getLogger("otel_perf")
    if not any(getattr(handler, "_otel_perf", False) for handler in package_logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler._otel_perf = True  # type: ignore[attr-defined]
        package_logger.addHandler(handler)
        package_logger.propagate = False
    if package_logger.level == logging.NOTSET:
        wanted = os.environ.get("OTEL_LOG_LEVEL", "").strip().lower()
        package_logger.setLevel(LEVELS.get(wanted, logging.INFO))
