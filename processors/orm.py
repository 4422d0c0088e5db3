"""Which SQLAlchemy relationship a query lazy-loads (`Order.customer`), for the N+1 fix.

SQLAlchemy's `do_orm_execute` event says, before a statement runs, whether it is a lazy load, of
which relationship and in which direction. The listener leaves that in a context variable; the DB
span started by the same execution (same thread, task or greenlet: async sessions share the
caller's context, and async engines get two spans per statement from the instrumentation, of which
only the second is ended) takes it in the span processor's `on_start`. It is cleared when the
statement has run (`after_cursor_execute`, `handle_error`) and overwritten by every ORM
execution, so a stale value never sticks to another query.

The engines the app connects with are remembered (weakly) so that their pools' utilisation can be
sampled (`pool_usage`).

The listeners run inside every execution of the app (selects, text(), DML, bulk, sync and async):
load options are read only for SELECTs (SQLAlchemy raises for the rest) and every listener is
guarded. They are installed only by an active analysis processor.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from otel_perf.processors import semconv
from otel_perf.processors.failsafe import guarded

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import Span

# (relationship, direction), e.g. ("Order.customer", "many_to_one")
_pending: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "otel_perf_lazy_load", default=None
)
_registered = False
_lock = threading.Lock()
# The engines the app connected with, for their pools' utilisation (`pool_usage`).
_engines: weakref.WeakSet[Any] = weakref.WeakSet()


def lazy_loaded_relationship(state: Any) -> tuple[str, str] | None:
    """(`Order.customer`, `many_to_one`) when this ORM execution is a lazy load, else None (never
    raises for non-SELECT executions: `load_options` and `lazy_loaded_from` raise there)."""
    if not state.is_select:
        return None
    if state.lazy_loaded_from is None or not state.loader_strategy_path:
        return None
    relationship = state.loader_strategy_path[-1]
    direction = getattr(getattr(relationship, "direction", None), "name", "")
    return str(relationship), direction.lower().replace("to", "_to_")


@guarded("sqlalchemy do_orm_execute", None)
def _on_orm_execute(state: Any) -> None:
    _pending.set(None)  # first: a failure below must not leave a stale relationship behind
    _pending.set(lazy_loaded_relationship(state))


@guarded("sqlalchemy engine_connect", None)
def _on_engine_connect(connection: Any, *_: Any) -> None:
    engine = connection.engine
    if engine not in _engines:
        _engines.add(engine)


def pool_usage() -> Iterator[tuple[str, int, int]]:
    """(pool name, connections checked out, capacity) of each bounded pool the app connected with:
    capacity is pool_size + max_overflow (QueuePool and its async variant; other pools are
    unbounded or single-connection). The name is the engine's URL without credentials or query."""
    for engine in list(_engines):
        try:
            pool = engine.pool
            size, overflow = pool.size(), getattr(pool, "_max_overflow", -1)
            if not isinstance(size, int) or overflow < 0 or size + overflow <= 0:
                continue
            url = engine.url
            name = f"{url.get_backend_name()}://{url.host or ''}{'/' + url.database if url.database else ''}"
            yield name, int(pool.checkedout()), size + overflow
        except Exception:  # a pool class we don't know: skip it
            continue


@guarded("sqlalchemy after_cursor_execute", None)
def _on_statement_done(*_: Any) -> None:
    if _pending.get() is not None:
        _pending.set(None)


def watch_lazy_loads() -> bool:
    """Listen to SQLAlchemy sessions and engines, once per process, if the app uses SQLAlchemy
    (already imported, as the SQLAlchemy instrumentation does at startup). True when listening."""
    global _registered
    with _lock:
        if _registered:
            return True
        if "sqlalchemy" not in sys.modules:
            return False
        try:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine
            from sqlalchemy.orm import Session
        except ImportError:
            return False
        event.listen(Session, "do_orm_execute", _on_orm_execute)
        event.listen(Engine, "after_cursor_execute", _on_statement_done)
        event.listen(Engine, "handle_error", _on_statement_done)
        event.listen(Engine, "engine_connect", _on_engine_connect)
        _registered = True
        return True


def annotate(span: Span) -> None:
    """On a starting client span: the relationship this execution lazy-loads, if any."""
    pending = _pending.get()
    if pending is not None:
        relationship, direction = pending
        span.set_attribute(semconv.PERF_ORM_LAZY_LOAD, relationship)
        if direction:
            span.set_attribute(semconv.PERF_ORM_LAZY_LOAD_DIRECTION, direction)
