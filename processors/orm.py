"""What SQLAlchemy's ORM does that a span cannot show: which relationship a query lazy-loads
(`Order.customer`, for the N+1 fix), and which relationships it loaded eagerly that the request then
never read (`perf.orm.eager_unused`, for the unused eager load).

Lazy loads. SQLAlchemy's `do_orm_execute` event says, before a statement runs, whether it is a lazy
load, of which relationship and in which direction. The listener leaves that in a context variable;
the DB span started by the same execution (same thread, task or greenlet: async sessions share the
caller's context, and async engines get two spans per statement from the instrumentation, of which
only the second is ended) takes it in the span processor's `on_start`. It is cleared when the
statement has run (`after_cursor_execute`, `handle_error`) and overwritten by every ORM
execution, so a stale value never sticks to another query.

Eager loads. A selectin or subquery load is a query of its own, which `do_orm_execute` names as a
relationship load (the relationship is the last step of its loader path); its span is noted the
same way. A joined load has no query of its own: the `load` instance event shows, per query and
mapper (until an instance shows a non-empty value), which relationships arrived already populated
with the row, and the query whose span started last in this context is the one that loaded them.

Whether the request read such a relationship is seen on the relationship's own class attribute,
since SQLAlchemy has no event for reading a loaded value: once a relationship has been loaded
eagerly, its `InstrumentedAttribute` (and its subclasses' copies) becomes, in place, a subclass
with the same slots and cache key whose `__get__` returns exactly what SQLAlchemy returns (or
raises what it raises) and then notes the read for the current trace. Column attributes and
relationships never loaded eagerly keep SQLAlchemy's own class; a watched read costs a truthiness
check while no traced request has an eager load in flight. (nplusone instead replaces
`InstrumentedAttribute.__get__` for every attribute of every model.) When the trace is released
(its local root ended), `settle` names on each loading query's span the relationships nobody read.

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
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otel_perf.processors import semconv
from otel_perf.processors.failsafe import guarded
from otel_perf.processors.tree import mount_piece, mounted_name

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, Span

# (relationship, direction), e.g. ("Order.customer", "many_to_one")
_pending: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "otel_perf_lazy_load", default=None
)
# (relationship property, strategy) of a selectin/subquery load about to run its own query.
_pending_eager: contextvars.ContextVar[tuple[Any, str] | None] = contextvars.ContextVar(
    "otel_perf_eager_load", default=None
)
_registered = False
# The instrumentation's `connect` span (`Engine.connect`) being taken in this context, if any.
_checkout: contextvars.ContextVar[Span | None] = contextvars.ContextVar("otel_perf_checkout", default=None)
_eager_loads = False  # whether eager loads are watched (see `watch_lazy_loads`)
_min_unread_requests = 1  # see `watch_lazy_loads`
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


def eager_loaded_relationship(state: Any) -> tuple[Any, str] | None:
    """(relationship property, strategy) when this ORM execution is the query of a selectin or
    subquery eager load, else None. Call it for SELECTs that are not lazy loads. The strategy names
    what the app wrote: `selectinload` (an option) or `lazy="selectin"` (the relationship's own)."""
    if not state.is_relationship_load:
        return None
    path = state.loader_strategy_path
    relationship = path[-1] if path else None
    if relationship is None or not hasattr(relationship, "direction"):
        return None
    parameters = state.parameters
    # SQLAlchemy's selectin loader binds the parents' keys as `primary_keys`.
    selectin = isinstance(parameters, Mapping) and "primary_keys" in parameters
    kind = "selectin" if selectin else "subquery"
    configured = relationship.lazy == kind
    return relationship, f'lazy="{kind}"' if configured else f"{kind}load"


@guarded("sqlalchemy do_orm_execute", None)
def _on_orm_execute(state: Any) -> None:
    # First: a failure below must not leave a stale relationship behind.
    _pending.set(None)
    _pending_eager.set(None)
    lazy = lazy_loaded_relationship(state)
    _pending.set(lazy)
    if _eager_loads and lazy is None and state.is_select:
        _pending_eager.set(eager_loaded_relationship(state))


@guarded("sqlalchemy pool connect", None)
def _on_new_connection(*_: Any) -> None:
    """The pool opened a new connection: the checkout span around it waited for the database's
    handshake, not for a free connection (`perf.db.new_connection`, read by the pool detector)."""
    span = _checkout.get()
    if span is not None and span.is_recording():
        span.set_attribute(semconv.PERF_DB_NEW_CONNECTION, True)


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
    if _pending_eager.get() is not None:
        _pending_eager.set(None)


def watch_lazy_loads(eager_loads: bool = True, min_unread_requests: int = 1) -> bool:
    """Listen to SQLAlchemy sessions and engines, once per process, if the app uses SQLAlchemy
    (already imported, as the SQLAlchemy instrumentation does at startup); with `eager_loads` (the
    unused-eager-load detector runs), also to every ORM load and to reads of eagerly loaded
    relationships, which cost a little on each. An eager load is marked unused once an operation's
    requests left it unread `min_unread_requests` times in a row. True when listening."""
    global _registered, _eager_loads, _min_unread_requests
    with _lock:
        _min_unread_requests = max(1, min_unread_requests)
        if _registered:
            return True
        if "sqlalchemy" not in sys.modules:
            return False
        try:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine
            from sqlalchemy.orm import Mapper, Session
            from sqlalchemy.pool import Pool
        except ImportError:
            return False
        event.listen(Session, "do_orm_execute", _on_orm_execute)
        event.listen(Engine, "after_cursor_execute", _on_statement_done)
        event.listen(Engine, "handle_error", _on_statement_done)
        event.listen(Engine, "engine_connect", _on_engine_connect)
        event.listen(Pool, "connect", _on_new_connection)
        if eager_loads:
            event.listen(Mapper, "load", _on_load, raw=True)
            event.listen(Session, "before_flush", _on_before_flush)
        _eager_loads = eager_loads
        _registered = True
        return True


def annotate(span: Span) -> None:
    """On a starting client span of an analysed trace: the relationship this execution lazy-loads,
    if any; and what eager loads need to know of the query (see `_note_query`)."""
    pending = _pending.get()
    if pending is not None:
        relationship, direction = pending
        span.set_attribute(semconv.PERF_ORM_LAZY_LOAD, relationship)
        if direction:
            span.set_attribute(semconv.PERF_ORM_LAZY_LOAD_DIRECTION, direction)
    if span.name == _CHECKOUT_SPAN:
        _checkout.set(span)
        return
    scope = span.instrumentation_scope
    # The driver's instrumentation (`opentelemetry-bootstrap`) traces the same query again, inside
    # it: the mark belongs on SQLAlchemy's span, the one every detector reads.
    if scope is None or scope.name == _SQLALCHEMY_SCOPE:
        _note_query(span)


# --- eager loads the request never read ---------------------------------------------------------

_CHECKOUT_SPAN = "connect"  # the instrumentation's pool checkout span: not a query
_SQLALCHEMY_SCOPE = "opentelemetry.instrumentation.sqlalchemy"
_MAX_TRACES = 4096  # traces with eager loads in flight (older ones are forgotten: never a finding)
_MAX_CONTEXTS = 256  # query contexts remembered for their span (results loaded in chunks)
_MAX_SEEN = 256
_MAX_STREAKS = 4096  # (operation, relationship) pairs whose unread streak is remembered
_NO_LOAD = frozenset(("noload", None))  # these fill an empty value in at load: not an eager load


class _QueryMark:
    """The last query span started in a context: joined eager loads are credited to it."""

    __slots__ = ("post_load", "seen", "span")

    def __init__(self, span: Span, post_load: Any) -> None:
        self.span = span
        self.post_load = post_load  # the relationship a selectin/subquery query loads, else None
        self.seen: set[tuple[int, int, int]] = set()  # (query context, class manager, path) looked at


class _TraceLoads:
    """One trace's eager loads and the relationships it read (reads arrive from request threads)."""

    __slots__ = ("eager", "registered", "touched")

    def __init__(self) -> None:
        self.eager: list[tuple[Span, str, str]] = []  # (loading query's span, relationship, strategy)
        self.registered: set[tuple[int, str]] = set()
        self.touched: set[str] = set()


_last_query: contextvars.ContextVar[_QueryMark | None] = contextvars.ContextVar(
    "otel_perf_last_query", default=None
)
_traces: OrderedDict[int, _TraceLoads] = OrderedDict()
# (the request's operation, see `_operation`; relationship) → requests in a row that loaded it unread.
_unread_streaks: OrderedDict[tuple[str, str], int] = OrderedDict()
_context_spans: OrderedDict[int, Span] = OrderedDict()
_watched: dict[int, bool] = {}  # id(relationship property) → its reads are seen
_read_names: dict[int, str] = {}  # id(watched class attribute) → "Order.items"
_watched_class: type | None = None


@guarded("eager load", None)
def _note_query(span: Span) -> None:
    eager = _pending_eager.get()
    _last_query.set(_QueryMark(span, eager[0] if eager is not None else None))
    if eager is not None:
        _register(span, *eager)


@guarded("sqlalchemy load", None)
def _on_load(state: Any, context: Any) -> None:
    """Per instance loaded: the hot path is a context variable and a set lookup."""
    mark = _last_query.get()
    if mark is None:
        return
    # Per path, not per mapper: people loaded as an author's followers (nothing joined below them)
    # load before the author, whose joined followers must still be looked at.
    key = (id(context), id(state.manager), id(state.load_path))
    seen = mark.seen
    if key in seen:
        return
    if len(seen) >= _MAX_SEEN:
        seen.clear()
    if _joined_loads(state, context, mark):
        seen.add(key)


def _joined_loads(state: Any, context: Any, mark: _QueryMark) -> bool:
    """Relationships that arrived populated with an instance a query loaded (joined eager loads),
    credited to the query that loaded them. True when the query's other instances of this mapper
    can't tell more (the next one is looked at while a joined value was empty on this one)."""
    trace_id = trace.get_current_span().get_span_context().trace_id
    mapper = state.manager.mapper
    span = _context_spans.get(id(context))
    if span is None or span.context.trace_id != trace_id:
        span = mark.span
        post_load = mark.post_load
        # A selectin/subquery query only loads its relationship's targets: an instance of another
        # mapper belongs to an outer query whose span is not known here.
        if post_load is not None and not mapper.isa(post_load.mapper):
            return True
        _context_spans[id(context)] = span
        if len(_context_spans) > _MAX_CONTEXTS:
            _context_spans.popitem(last=False)
    if span.context.trace_id != trace_id or span.attributes is None:
        return True
    if semconv.first(span.attributes, semconv.DB_STATEMENT) is None:
        return True
    populated = state.dict
    done = True
    for relationship in mapper.relationships:
        key, lazy = relationship.key, relationship.lazy
        if key not in populated or lazy in _NO_LOAD:
            continue
        value = populated[key]
        if value is None or (isinstance(value, (list, set, dict)) and not value):
            done = False  # nothing here (or `noload`): the next instance may say
            continue
        _register(span, relationship, 'lazy="joined"' if lazy in ("joined", False) else "joinedload")
    return done


def _register(span: Span, relationship: Any, strategy: str) -> None:
    """Note that `span`'s query loaded `relationship` eagerly, if its reads can be seen."""
    if not _watch_reads(relationship):
        return
    name = str(relationship)
    trace_id = span.context.trace_id
    loads = _traces.get(trace_id)
    if loads is None:
        with _lock:
            loads = _traces.get(trace_id)
            if loads is None:
                global _created
                loads = _traces[trace_id] = _TraceLoads()
                _created += 1
                if len(_traces) > _MAX_TRACES:
                    _traces.popitem(last=False)
    key = (id(span), name)
    if key in loads.registered:
        return
    if strategy.startswith("joined"):
        # A subquery load fills its collection before the parent's `load` event: not a joined load.
        start = span.start_time or 0
        for other, other_name, _ in loads.eager:
            if other_name == name and (other.start_time or 0) >= start and other is not span:
                return
    loads.registered.add(key)
    loads.eager.append((span, name, strategy))


def _watch_reads(relationship: Any) -> bool:
    """Make the relationship's class attributes note reads (see the module's docstring). False
    when some attribute is not SQLAlchemy's own class (then its reads could go unseen)."""
    done = _watched.get(id(relationship))
    if done is not None:
        return done
    with _lock:
        done = _watched.get(id(relationship))
        if done is not None:
            return done
        watching = _read_watching_class()
        from sqlalchemy.orm.attributes import InstrumentedAttribute

        name = str(relationship)
        attributes = []
        for mapper in relationship.parent.self_and_descendants:
            attribute = mapper.class_manager.get(relationship.key)
            if attribute is not None:
                attributes.append(attribute)
        ok = bool(attributes) and all(type(each) in (InstrumentedAttribute, watching) for each in attributes)
        if ok:
            for attribute in attributes:
                _read_names[id(attribute)] = name
                attribute.__class__ = watching
        _watched[id(relationship)] = ok
        return ok


def _read_watching_class() -> type:
    """`InstrumentedAttribute` whose `__get__` also notes the read (made once, SQLAlchemy present)."""
    global _watched_class
    if _watched_class is not None:
        return _watched_class
    from sqlalchemy.orm.attributes import InstrumentedAttribute

    read = InstrumentedAttribute.__get__

    class ReadWatchedAttribute(InstrumentedAttribute[Any]):
        """Same slots, same cache key (`inherit_cache`), same values and errors: only notes reads."""

        __slots__ = ()
        inherit_cache = True

        def __get__(self, instance: object, owner: Any) -> Any:
            value = read(self, instance, owner)  # the app's value, or its exception, untouched
            if _traces and instance is not None:
                _note_read(id(self))
            return value

    _watched_class = ReadWatchedAttribute
    return ReadWatchedAttribute


# (OpenTelemetry context, `_created` then, its trace's loads): consecutive reads under one context
# find their trace without decoding the current span again. A context object never changes (a new
# span makes a new one), so it names its trace; `_created` says whether loads appeared since.
_last_read: tuple[object, int, _TraceLoads | None] = (None, -1, None)
_created = 0


@guarded("relationship read", None)
def _note_read(attribute_id: int) -> None:
    global _last_read
    current = otel_context.get_current()
    cached, created, loads = _last_read
    if cached is not current or created != _created:
        created = _created
        loads = _traces.get(trace.get_current_span(current).get_span_context().trace_id)
        _last_read = (current, created, loads)
    if loads is not None:
        name = _read_names.get(attribute_id)
        if name is not None:
            loads.touched.add(name)


@guarded("deleted objects", None)
def _on_before_flush(session: Any, *_: Any) -> None:
    """Deleting an object reads what was loaded with it, without its attributes: the flush walks its
    relationships (cascades, foreign keys to clear). Eager loads of a deleted object were used."""
    if not _traces:  # every flush comes here: no set of deleted objects built for nothing
        return
    deleted = session.deleted
    if not deleted:
        return
    loads = _traces.get(trace.get_current_span().get_span_context().trace_id)
    if loads is None:
        return
    from sqlalchemy import inspect

    for instance in deleted:
        loads.touched.update(str(relationship) for relationship in inspect(instance).mapper.relationships)


def _operation(spans: Sequence[ReadableSpan]) -> str:
    """The request's operation: its root span's name, behind a mounted sub-application the whole
    route (`GET /api/articles`, not `GET /api`: the rule `TraceTree.operation` files findings by)."""
    root: ReadableSpan | None = None
    mounts: dict[int, tuple[int, str]] = {}
    for span in spans:
        parent = span.parent
        if parent is None or parent.is_remote:
            root = root or span
        elif span.kind is SpanKind.INTERNAL:
            route = semconv.first(span.attributes or {}, semconv.HTTP_ROUTE)
            if route:
                mounts[parent.span_id] = (span.context.span_id, mount_piece(str(route)))
    if root is None:
        return ""
    if root.kind is not SpanKind.SERVER:
        return root.name
    return mounted_name(root.name, root.context.span_id, mounts)


def _unread_long_enough(spans: Sequence[ReadableSpan], loaded: set[str], read: set[str]) -> set[str]:
    """Of the relationships this request loaded eagerly, those its operation (see `_operation`)
    left unread in the last `_min_unread_requests` requests that loaded them, this one included. A
    relationship read only on some requests (`if user.is_admin: order.customer`) is not unused;
    a read starts the count over."""
    root = _operation(spans)
    confirmed = set()
    with _lock:
        for name in loaded:
            key = (root, name)
            streak = _unread_streaks.pop(key, 0)
            if name in read:
                continue
            _unread_streaks[key] = streak = streak + 1
            if streak >= _min_unread_requests:
                confirmed.add(name)
        while len(_unread_streaks) > _MAX_STREAKS:
            _unread_streaks.popitem(last=False)
    return confirmed


# (span, attributes to add to it)
SpanAttributes = list[tuple["ReadableSpan", dict[str, tuple[str, ...]]]]


def settle(spans: Sequence[ReadableSpan]) -> SpanAttributes:
    """Once a trace is released (its local root ended): the attributes to add to its loading
    queries' spans, naming the relationships they loaded eagerly that the request never read."""
    if not _traces or not spans:
        return []
    return _settle(spans) or []


_UNSETTLED: SpanAttributes | None = None


@guarded("eager load settle", _UNSETTLED)
def _settle(spans: Sequence[ReadableSpan]) -> SpanAttributes | None:
    with _lock:
        loads = _traces.pop(spans[0].context.trace_id, None)
    if loads is None:
        return []
    # The SDK hands processors a new `ReadableSpan` at end: match by span id (spans never ended,
    # such as the first of an async engine's pair, are not in the trace).
    ended = {span.context.span_id: span for span in spans}
    unused: dict[int, tuple[ReadableSpan, list[str], list[str]]] = {}
    touched = loads.touched
    confirmed = _unread_long_enough(spans, {name for _, name, _ in loads.eager}, touched)
    for span, name, strategy in loads.eager:
        readable = ended.get(span.context.span_id)
        if name not in confirmed or readable is None:
            continue
        entry = unused.setdefault(id(readable), (readable, [], []))
        if name not in entry[1]:
            entry[1].append(name)
            entry[2].append(strategy)
    return [
        (
            span,
            {
                semconv.PERF_ORM_EAGER_UNUSED: tuple(names),
                semconv.PERF_ORM_EAGER_UNUSED_STRATEGY: tuple(strategies),
            },
        )
        for span, names, strategies in unused.values()
    ]
