"""The trace-tree model every detector reads.

Both hosts build it: the in-process span processor from SDK `ReadableSpan`s, the collector-side
analyzer from OTLP protobuf or JSON (`processors.sources`). Detectors never know which.
Building is linear in the number of spans and tolerates what real traces contain: missing
parents (the tree gets several roots), duplicate span ids (the first wins), parent cycles
(broken, the cycle's entry becomes a root).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# Span kinds, numbered as in OTLP.
KIND_INTERNAL = 1
KIND_SERVER = 2
KIND_CLIENT = 3
KIND_PRODUCER = 4
KIND_CONSUMER = 5
# Where a service is entered: a request, a message consumed.
ENTRY_KINDS = (KIND_SERVER, KIND_CONSUMER)
MISSING_SPAN_NAME = "(missing parent span)"
EARLIEST_NS = 946_684_800 * 10**9  # 2000-01-01: a span time before it is an unset or broken clock
_LAZY_FIELDS = frozenset(
    (
        "attributes",
        "db_system",
        "db_collection",
        "statement",
        "http_method",
        "http_url",
        "http_route",
        "http_status",
        "server_address",
        "code_file",
        "code_line",
        "code_function",
        "orm_direction",
        "orm_lazy_load",
        "perf_fingerprint",
    )
)


def starts_request(has_parent: bool, kind: int) -> bool:
    """Whether a span is a request the trend and error-rate monitors count: a server/consumer span
    (a service's entry), or a trace's root other than a bare call (a job, a script's span). A
    query or call with no parent (start-up DDL, a poller) is no request."""
    if kind in ENTRY_KINDS:
        return True
    return not has_parent and kind not in (KIND_CLIENT, KIND_PRODUCER)


# The operation of work outside any request (see `FirstRequests`).
STARTUP = "startup"
BACKGROUND = "background"
_MAX_SERVICES = 10_000


class FirstRequests:
    """When each service's first request started, as far as a host has seen: a bare query or call
    (a trace whose root is a client span) that started before it is start-up work (`startup`), one
    after it background work (`background`). Findings are filed under those, not under a span name
    (`CREATE ./shop.db`) as if it were a route. Written from the hosts' span paths: a dict store.

    `bound` maps a span time to the time it counts at. The analyzer, receiving other processes'
    spans, bounds them by its receive time (`within_skew`): a sender with a wrong clock (a request
    dated 1970) can't date a service's first request so early that all its later start-up work
    passes for background work."""

    __slots__ = ("_bound", "_first")

    def __init__(self, bound: Callable[[int], int] | None = None) -> None:
        self._first: dict[str, int] = {}
        self._bound = bound

    def _bounded(self, time_ns: int) -> int:
        return time_ns if self._bound is None else self._bound(time_ns)

    def saw(self, service: str, start_ns: int) -> None:
        start_ns = self._bounded(start_ns)
        first = self._first.get(service)
        if first is None:
            if len(self._first) < _MAX_SERVICES:
                self._first[service] = start_ns
        elif start_ns < first:
            self._first[service] = start_ns

    def operation(self, service: str, start_ns: int) -> str:
        first = self._first.get(service)
        return STARTUP if first is None or self._bounded(start_ns) < first else BACKGROUND


def within_skew(clock: Callable[[], int], max_skew_s: float) -> Callable[[int], int]:
    """A span time as a live host counts it: itself within `max_skew_s` of `clock`, the clock's
    bound beyond (the rule the router and the watcher follow too)."""
    skew = int(max_skew_s * 1e9)

    def bound(time_ns: int) -> int:
        now = clock()
        return min(max(time_ns, now - skew), now + skew)

    return bound


KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class TraceShape:
    """What a trace looks like before any node is built, read in one cheap pass over its raw spans:
    enough for each detector to say whether it could find anything (`Detector.could_match`), so a
    healthy trace costs a fraction of a full analysis."""

    spans: int
    max_client_siblings: int  # the most CLIENT spans under one parent
    max_duration_ns: int
    # Whether a query span carries an eager load nobody read (`perf.orm.eager_unused`). Only the SDK
    # adapter can tell (it makes the mark); OTLP shapes say False, so the analyzer never pays for
    # the check: an app that analyses in-process has already reported it, and `otel-perf analyze`
    # (no pre-check) still reads the mark on exported spans.
    eager_unused: bool = False


class SpanNode:
    """One span with the fields detectors use already extracted (see `processors.semconv`)."""

    __slots__ = (
        "_filler",
        "attributes",
        "call_signature",
        "children",
        "code_file",
        "code_function",
        "code_line",
        "db_collection",
        "db_system",
        "end_ns",
        "http_method",
        "http_route",
        "http_status",
        "http_url",
        "is_error",
        "kind",
        "name",
        "orm_direction",
        "orm_lazy_load",
        "parent",
        "parent_id",
        "perf_fingerprint",
        "scope",
        "server_address",
        "service",
        "service_version",
        "source",
        "span_id",
        "start_ns",
        "statement",
    )

    def __init__(
        self,
        span_id: int,
        parent_id: int | None,
        name: str,
        kind: int,
        start_ns: int,
        end_ns: int,
        service: str = "unknown_service",
        *,
        is_error: bool = False,
        attributes: Mapping[str, Any] | None = None,
        service_version: str | None = None,
        scope: str = "",
        filler: Callable[[SpanNode], None] | None = None,
    ) -> None:
        self.span_id = span_id
        self.parent_id = parent_id or None
        self.name = name
        self.kind = kind
        if start_ns < EARLIEST_NS <= end_ns:  # an unset start (0) or a broken clock: no duration known
            start_ns = end_ns
        self.start_ns = start_ns
        self.end_ns = max(end_ns, start_ns)
        self.service = service
        self.service_version = service_version
        self.scope = scope  # the instrumentation that made the span
        self.is_error = is_error
        self.source: Any = None  # the span this node was built from, for re-export
        self.parent: SpanNode | None = None
        self.children: list[SpanNode] = []
        # With a filler, attributes and the semantic fields are read from the source on first use:
        # most spans of a trace are never looked at that closely, and reading attributes is the
        # dearest part of building a node.
        self._filler = filler
        self.call_signature: Any = None  # detectors' memo (`detectors.calls.signature`)
        if filler is None:
            self.attributes = attributes if attributes is not None else {}
            self.clear_semantics()

    def clear_semantics(self) -> None:
        self.db_system: str | None = None
        self.db_collection: str | None = None
        self.statement: str | None = None
        self.http_method: str | None = None
        self.http_url: str | None = None
        self.http_route: str | None = None
        self.http_status: int | None = None
        self.server_address: str | None = None
        self.code_file: str | None = None
        self.code_line: int | None = None
        self.code_function: str | None = None
        self.orm_lazy_load: str | None = None
        self.orm_direction: str | None = None
        self.perf_fingerprint: str | None = None

    def __getattr__(self, name: str) -> Any:
        """Only reached for an unset slot: a semantic field of a node not filled yet."""
        filler = self._filler
        if filler is None or name not in _LAZY_FIELDS:
            raise AttributeError(name)
        self._filler = None
        self.clear_semantics()
        filler(self)
        return getattr(self, name)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

    @property
    def is_db(self) -> bool:
        return self.statement is not None or self.db_system is not None

    @property
    def is_connection_checkout(self) -> bool:
        """The SQLAlchemy instrumentation's `connect` span: `Engine.connect`, i.e. taking a
        connection from the pool (its wait included), not a query."""
        return (
            self.name == "connect"
            and self.kind == KIND_CLIENT
            and self.statement is None
            and self.db_system is not None
        )

    @property
    def is_http_client(self) -> bool:
        return self.kind == KIND_CLIENT and self.http_url is not None and self.statement is None

    @property
    def code_location(self) -> dict[str, Any] | None:
        if self.code_file is None and self.code_function is None:
            return None
        return {"file": self.code_file, "line": self.code_line, "function": self.code_function}

    def __repr__(self) -> str:
        return f"SpanNode({self.name!r}, {self.span_id_hex}, {self.duration_ms:.2f}ms)"


class TraceTree:
    """The spans of one trace (or of one process's part of it), linked parent to children."""

    __slots__ = ("_end_ns", "_entries", "first_requests", "nodes", "placeholders", "roots", "trace_id")

    def __init__(
        self, trace_id: int, spans: Iterable[SpanNode], first_requests: FirstRequests | None = None
    ) -> None:
        self.trace_id = trace_id
        self.first_requests = first_requests
        by_id: dict[int, SpanNode] = {}
        for node in spans:
            if node.span_id not in by_id:
                node.children = []
                node.parent = None
                by_id[node.span_id] = node
        self.nodes: dict[int, SpanNode] = by_id
        self.placeholders: set[int] = set()  # ids of nodes standing in for missing parents
        roots: list[SpanNode] = []
        for node in by_id.values():
            parent = by_id.get(node.parent_id) if node.parent_id is not None else None
            if parent is None or parent is node:
                roots.append(node)
            else:
                node.parent = parent
                parent.children.append(node)
        if self._link_from(roots, set()) < len(by_id):
            self._cut_cycles(roots)
        roots = self._adopt_orphans(roots)
        roots.sort(key=_start)
        self.roots = roots
        self._entries: dict[int, SpanNode] | None = None
        self._end_ns: int | None = None

    @staticmethod
    def _link_from(roots: list[SpanNode], reached: set[int] | None) -> int:
        """Sort children by start time below `roots`; returns how many nodes were reached
        (and records their ids in `reached`, when given)."""
        count = 0
        stack = list(roots)
        while stack:
            node = stack.pop()
            count += 1
            if reached is not None:
                reached.add(node.span_id)
            if len(node.children) > 1:
                node.children.sort(key=_start)
            stack.extend(node.children)
        return count

    def _adopt_orphans(self, roots: list[SpanNode]) -> list[SpanNode]:
        """Siblings whose parent is missing (it never ended, was dropped or sampled out) stay
        siblings: they hang under a placeholder for that parent, so a loop below it is still seen."""
        orphans: dict[int, list[SpanNode]] = {}
        for node in roots:
            if node.parent_id is not None and node.parent_id not in self.nodes:
                orphans.setdefault(node.parent_id, []).append(node)
        adopted: set[int] = set()
        for parent_id, children in orphans.items():
            if len(children) < 2:
                continue
            first = children[0]
            placeholder = SpanNode(
                parent_id,
                None,
                MISSING_SPAN_NAME,
                0,
                min(child.start_ns for child in children),
                max(child.end_ns for child in children),
                first.service,
            )
            placeholder.children = sorted(children, key=_start)
            for child in children:
                child.parent = placeholder
                adopted.add(id(child))
            self.nodes[parent_id] = placeholder
            self.placeholders.add(parent_id)
            roots.append(placeholder)
        return [node for node in roots if id(node) not in adopted] if adopted else roots

    def _cut_cycles(self, roots: list[SpanNode]) -> None:
        """Nodes no root reaches hang below a parent cycle: cut each cycle once, linearly."""
        reached: set[int] = set()
        self._link_from(roots, reached)
        for node in self.nodes.values():
            if node.span_id in reached:
                continue
            on_path: set[int] = set()
            current = node
            while current.span_id not in on_path and current.parent is not None:
                on_path.add(current.span_id)
                current = current.parent
            parent = current.parent
            if parent is None:  # not on a cycle after all; unreachable in a consistent tree
                continue
            parent.children.remove(current)
            current.parent = None
            roots.append(current)
            self._link_from([current], reached)

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def root(self) -> SpanNode | None:
        """The earliest-starting root: the request's entry span when the trace is whole."""
        return self.roots[0] if self.roots else None

    def __len__(self) -> int:
        return len(self.nodes)

    def walk(self) -> Iterator[SpanNode]:
        """Every node, parents before children."""
        stack = list(reversed(self.roots))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def entry_span(self, node: SpanNode) -> SpanNode:
        """The span that names the operation `node` belongs to: its nearest server/consumer
        ancestor in the same service, else its root."""
        if self._entries is None:
            entries: dict[int, SpanNode] = {}
            for each in self.walk():
                parent = each.parent
                if parent is None or each.kind in ENTRY_KINDS or each.service != parent.service:
                    entries[each.span_id] = each
                else:
                    entries[each.span_id] = entries[parent.span_id]
            self._entries = entries
        return self._entries[node.span_id]

    def operation(self, node: SpanNode) -> str:
        """The operation a finding about `node` is filed under: its entry span's name (`GET
        /orders/{id}`, a job's span), or `startup`/`background` for a bare query or call outside
        any request (see `FirstRequests`; `background` when the host keeps no record). Under a
        mounted sub-application, the route is the mount's and the sub-app's together."""
        entry = self.entry_span(node)
        if entry.parent is None and entry.kind in (KIND_CLIENT, KIND_PRODUCER):
            if self.first_requests is None:
                return BACKGROUND
            return self.first_requests.operation(entry.service, entry.start_ns)
        if entry.kind == KIND_SERVER and entry.http_route:
            inner = mounted_route(entry, node if node is not entry else _innermost_mount(entry))
            if inner is not None:
                method = entry.http_method or entry.name.partition(" ")[0]
                return join_mount(f"{method} {entry.http_route}", inner)
        return entry.name

    def is_genuine_entry(self, entry: SpanNode) -> bool:
        """Whether an entry span (see `entry_span`) is one the trace really has: its true root, or a
        server/consumer span. Not a placeholder for a missing parent, nor a client or internal span
        whose parent is missing (a fragment of a trace, e.g. analysed without the request that
        made it): an alert filed under either would name an operation that does not exist."""
        if entry.span_id in self.placeholders:
            return False
        if entry.parent_id is None or entry.parent is not None:
            return True
        return entry.kind in ENTRY_KINDS

    def end_ns(self) -> int:
        """When the trace ended (the latest span end); computed once."""
        if self._end_ns is None:
            self._end_ns = max((node.end_ns for node in self.nodes.values()), default=0)
        return self._end_ns


def mounted_route(entry: SpanNode, node: SpanNode) -> str | None:
    """The route of a mounted sub-application (`app.mount("/api", api)`) that `node` ran under: the
    FastAPI/Starlette instrumentation gives the outer server span the mount's route (`/api`) and
    the sub-app an internal span of its own with the real one (`/articles/{slug}`). None when no
    such span lies between `entry` and `node` (`node` included); mounts in mounts are joined."""
    routes: list[str] = []
    current: SpanNode | None = node
    while current is not None and current is not entry:
        if current.kind == KIND_INTERNAL and current.http_route and current.service == entry.service:
            routes.append(mount_piece(current.http_route))
        current = current.parent
    return "".join(reversed(routes)) if routes else None


def mount_piece(route: str) -> str:
    """A sub-application's route as it is appended to its mount's (see `join_mount`)."""
    return route.rstrip("/") or "/"


def join_mount(operation: str, inner: str) -> str:
    """`GET /api` and a mounted sub-app's `/articles/{slug}` (pieces, see `mount_piece`): one
    operation, `GET /api/articles/{slug}`. The one rule for the tree and the span processor."""
    return f"{operation.rstrip('/')}{inner}"


def mounted_name(name: str, span_id: Any, mounts: Mapping[Any, tuple[Any, str]]) -> str:
    """A request span's `name` joined with the routes of the sub-applications mounted below it, for
    spans not in a tree: `mounts` maps a span's id to its sub-application span's (id, piece). At most
    one join per mount: ids may loop in a hostile request."""
    for _ in range(len(mounts)):
        mount = mounts.get(span_id)
        if mount is None:
            break
        span_id, piece = mount
        name = join_mount(name, piece)
    return name


def _innermost_mount(entry: SpanNode) -> SpanNode:
    """Below a request span, the deepest chain of sub-application spans (see `mounted_route`)."""
    current = entry
    while True:
        mount = next(
            (
                child
                for child in current.children
                if child.kind == KIND_INTERNAL and child.http_route and child.service == entry.service
            ),
            None,
        )
        if mount is None:
            return current
        current = mount


def _start(node: SpanNode) -> int:
    return node.start_ns
