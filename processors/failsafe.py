"""Every hook otel-perf runs inside application code (SQLAlchemy events, span start/end, call-site
capture) goes through `guarded`: an exception is counted and logged once per hook, never raised.

A monitoring tool that raises into the code it watches breaks the app it was installed to help.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

logger = logging.getLogger("otel_perf.hooks")

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
failures: dict[str, int] = {}


def record_failure(hook: str) -> None:
    """Count a failure of `hook`; the first one is logged with its traceback."""
    with _lock:
        count = failures.get(hook, 0) + 1
        failures[hook] = count
    if count == 1:
        logger.warning(
            "otel-perf: the %s hook failed; the application continues unaffected (further failures "
            "are only counted, see otel_perf.hook.failures)",
            hook,
            exc_info=True,
        )


def guarded(hook: str, default: R) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated hook; on any exception, record it and return `default` instead."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except Exception:
                record_failure(hook)
                return default

        return wrapper

    return decorate
