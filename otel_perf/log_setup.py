"""otel-perf's own log lines (warnings, bad settings) must reach stderr even in apps that
configure no logging: one handler on the `otel_perf` logger, not on the root."""

from __future__ import annotations

import logging


def ensure_stderr_logging() -> None:
    package_logger = logging.getLogger("otel_perf")
    if not any(getattr(handler, "_otel_perf", False) for handler in package_logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler._otel_perf = True  # type: ignore[attr-defined]
        package_logger.addHandler(handler)
        package_logger.propagate = False
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.INFO)
