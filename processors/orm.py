"""Which SQLAlchemy relationship a query lazy-loads (`Order.customer`), for the N+1 fix.

SQLAlchemy's `do_orm_execute` event says, before a statement runs, whether it is a lazy load and
of which relationship. The listener leaves that in a context variable; the DB span started by the
same execution (same thread or task, a few frames later) takes it in the span processor's
`on_start`. Every ORM execution overwrites it, so a stale value never sticks to another query.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from typing import Any

from otel_perf.processors import semconv

_pending: contextvars.ContextVar[str | None] = contextvars.ContextVar("otel_perf_lazy_load", default=None)
_registered = False
_lock = threading.Lock()


def _on_orm_execute(state: Any) -> None:
    relationship = None
    if state.lazy_loaded_from is not None and state.loader_strategy_path:
        relationship = str(state.loader_strategy_path[-1])
    _pending.set(relationship)


def watch_lazy_loads() -> bool:
    """Listen to SQLAlchemy sessions, once per process, if the app uses SQLAlchemy (already imported,
    as the SQLAlchemy instrumentation does at startup). True when listening."""
    global _registered
    with _lock:
        if _registered:
            return True
        if "sqlalchemy" not in sys.modules:
            return False
        try:
            from sqlalchemy import event
            from sqlalchemy.orm import Session
        except ImportError:
            return False
        event.listen(Session, "do_orm_execute", _on_orm_execute)
        _registered = True
        return True


def annotate(span: Any) -> None:
    """On a starting client span: the relationship this execution lazy-loads, if any."""
    relationship = _pending.get()
    if relationship is not None:
        _pending.set(None)
        span.set_attribute(semconv.PERF_ORM_LAZY_LOAD, relationship)
