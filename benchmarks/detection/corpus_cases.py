"""The labelled trace corpus of `benchmarks.detection.corpus`: every pattern the trace detectors look
for, each beside its near-misses and traps, as OpenTelemetry's Python instrumentations really emit
them, written as OTLP JSON lines (the collector file exporter's format, what `otel-perf analyze`
reads).

Spans carry what the instrumentations put on them (opentelemetry-python-contrib 0.66b2):

- FastAPI (`opentelemetry.instrumentation.fastapi`, ASGI middleware): a SERVER span named
  `GET /orders/{order_id}` with `http.route`, old-convention `http.method`/`http.target`/`http.url`
  (stable ones when opted in), and INTERNAL `… http send` spans at the end of the request.
- SQLAlchemy (`opentelemetry.instrumentation.sqlalchemy`): CLIENT spans named after the statement's
  first word and the database (`SELECT shop.db`), `db.statement`, `db.system` (`sqlite`,
  `postgresql`), `db.name`, `db.operation`; with `OTEL_SEMCONV_STABILITY_OPT_IN=database`,
  `db.query.text`, `db.system.name`, `db.namespace`. `Engine.connect` is a CLIENT span named
  `connect` with `db.system` and no statement. Bound parameters as each driver writes them: `?`
  (sqlite3), `%(name)s` (psycopg), `$1` (asyncpg).
- Driver echoes (`opentelemetry-bootstrap -a install`): `opentelemetry.instrumentation.sqlite3` and
  `…psycopg` trace the same statement again inside the SQLAlchemy span's time, `…urllib3` each call
  `requests` made.
- httpx (stable HTTP conventions: `http.request.method`, `url.full`, `server.address`) and requests
  (old ones: `http.method`, `http.url`): CLIENT spans named after the method.
- Redis (`opentelemetry.instrumentation.redis`): CLIENT spans named after the command (`GET`),
  `db.system` `redis`, `db.statement` `GET authors:1` (older releases) or sanitized `GET ?` (0.5x
  onwards), `db.redis.database_index`, `net.peer.name`.
- pymemcache: CLIENT spans named `get`, `db.system` `memcached`, `db.statement` `get authors:1`.
- pymongo (also under motor): CLIENT spans named `shop.find`, `db.system` `mongodb`, `db.statement`
  `find`, `db.mongodb.collection`.

Each case is built from its own seeded generator (durations and gaps jitter a little, ids are
random), so a seed gives the same corpus; the timings a label depends on (thresholds, overlaps) are
exact.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

MS = 1_000_000  # ns
BASE_NS = 1_793_523_600 * 10**9  # 2026-11-01T09:00:00Z
SPANS_PER_LINE = 16  # one export batch per line, as the file exporter writes them

KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
STATUS_ERROR = 2
INSTRUMENTATION_VERSION = "0.66b2"
FASTAPI = "opentelemetry.instrumentation.fastapi"
SQLALCHEMY = "opentelemetry.instrumentation.sqlalchemy"
SQLITE3 = "opentelemetry.instrumentation.sqlite3"
PSYCOPG = "opentelemetry.instrumentation.psycopg"
HTTPX = "opentelemetry.instrumentation.httpx"
REQUESTS = "opentelemetry.instrumentation.requests"
URLLIB3 = "opentelemetry.instrumentation.urllib3"
REDIS = "opentelemetry.instrumentation.redis"
PYMEMCACHE = "opentelemetry.instrumentation.pymemcache"
PYMONGO = "opentelemetry.instrumentation.pymongo"
APP = "shop.app"  # the application's own tracer (jobs, manual spans)


# --- labels ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """One finding a case must produce: its type and `details.kind` (None when it has none), and
    optionally its operation and detail values (`concurrent=False` also matches a missing key)."""

    type: str
    kind: str | None = None
    operation: str | None = None
    details: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        parts = [f"{self.type}/{self.kind}" if self.kind else self.type]
        if self.operation is not None:
            parts.append(f"operation={self.operation!r}")
        parts.extend(f"{key}={value!r}" for key, value in self.details)
        return " ".join(parts)


def n_plus_one(
    kind: str, count: int | None = None, *, concurrent: bool = False, operation: str | None = None
) -> Expect:
    """An N+1 of `count` calls (any count when None), sequential unless `concurrent`."""
    details: list[tuple[str, Any]] = [("concurrent", concurrent)]
    if count is not None:
        details.insert(0, ("count", count))
    return Expect("n_plus_one", kind, operation, tuple(details))


def mn_plus_one() -> Expect:
    return Expect("mn_plus_one")


def consecutive(kind: str) -> Expect:
    return Expect("consecutive_calls", kind)


def slow(operation: str | None = None) -> Expect:
    return Expect("slow_span", None, operation)


def pool_wait() -> Expect:
    return Expect("pool_exhaustion")


def unused_eager_load() -> Expect:
    return Expect("unused_eager_load", "db")


# --- spans and traces -----------------------------------------------------------------------------


@dataclass
class Span:
    trace: Trace
    span_id: int
    parent_id: int | None
    name: str
    kind: int
    start: float  # ms from the trace's start, on the true clock
    end: float
    service: str
    scope: str
    attributes: dict[str, Any]
    error: bool = False

    def child_time(self) -> float:
        """When a child may start: just after this span did."""
        return self.start + 0.05


@dataclass
class Trace:
    """One trace's spans; `skew_ms` shifts every span of a service as its host's clock would."""

    rng: random.Random
    offset_ms: float
    skew_ms: Mapping[str, float] = field(default_factory=dict)
    spans: list[Span] = field(default_factory=list)
    trace_id: int = 0

    def __post_init__(self) -> None:
        self.trace_id = self.rng.getrandbits(128) | 1

    def span(
        self,
        name: str,
        kind: int,
        start: float,
        duration: float,
        parent: Span | None,
        *,
        scope: str,
        attributes: dict[str, Any],
        service: str | None = None,
        error: bool = False,
    ) -> Span:
        owner = service or (parent.service if parent is not None else "shop")
        span = Span(
            self,
            self.rng.getrandbits(64) | 1,
            parent.span_id if parent is not None else None,
            name,
            kind,
            start,
            start + duration,
            owner,
            scope,
            attributes,
            error,
        )
        self.spans.append(span)
        return span

    def jitter(self, ms: float, spread: float = 0.15) -> float:
        return ms * self.rng.uniform(1 - spread, 1 + spread)


class Scene:
    """The traces of one case, in time order."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.traces: list[Trace] = []

    def trace(self, at_ms: float = 0.0, skew_ms: Mapping[str, float] | None = None) -> Trace:
        trace = Trace(self.rng, at_ms, dict(skew_ms or {}))
        self.traces.append(trace)
        return trace

    def lines(self) -> list[str]:
        """OTLP JSON lines: each trace's spans in the order they ended, in batches of
        `SPANS_PER_LINE`, grouped by resource (service) and instrumentation scope."""
        lines: list[str] = []
        for trace in self.traces:
            ended = sorted(trace.spans, key=lambda span: span.end)
            for first in range(0, len(ended), SPANS_PER_LINE):
                lines.append(_line(trace, ended[first : first + SPANS_PER_LINE]))
        return lines


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_value(each) for each in value]}}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def _attributes(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in attributes.items()]


def _ns(trace: Trace, span: Span, ms: float) -> str:
    return str(BASE_NS + round((trace.offset_ms + trace.skew_ms.get(span.service, 0.0) + ms) * MS))


def _line(trace: Trace, spans: list[Span]) -> str:
    by_service: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for span in spans:
        encoded: dict[str, Any] = {
            "traceId": f"{trace.trace_id:032x}",
            "spanId": f"{span.span_id:016x}",
            "name": span.name,
            "kind": span.kind,
            "startTimeUnixNano": _ns(trace, span, span.start),
            "endTimeUnixNano": _ns(trace, span, span.end),
            "attributes": _attributes(span.attributes),
            "status": {"code": STATUS_ERROR} if span.error else {},
        }
        if span.parent_id is not None:
            encoded["parentSpanId"] = f"{span.parent_id:016x}"
        by_service.setdefault(span.service, {}).setdefault(span.scope, []).append(encoded)
    resource_spans = [
        {
            "resource": {
                "attributes": _attributes(
                    {
                        "service.name": service,
                        "service.version": "1.4.2",
                        "telemetry.sdk.language": "python",
                        "telemetry.sdk.name": "opentelemetry",
                        "telemetry.sdk.version": "1.45.2",
                        "host.name": f"{service}-7d9f8c-x2k4q",
                    }
                )
            },
            "scopeSpans": [
                {
                    "scope": {
                        "name": scope,
                        "version": "" if scope == APP else INSTRUMENTATION_VERSION,
                    },
                    "spans": scope_spans,
                }
                for scope, scope_spans in scopes.items()
            ],
        }
        for service, scopes in by_service.items()
    ]
    return json.dumps({"resourceSpans": resource_spans}, separators=(",", ":"))


# --- what each instrumentation emits --------------------------------------------------------------


def request(
    t: Trace,
    method: str,
    route: str,
    path: str | None = None,
    *,
    start: float = 0.0,
    service: str = "shop",
    parent: Span | None = None,
    stable: bool = False,
) -> Span:
    """FastAPI's server span (end it with `respond`)."""
    target = path or route
    host = f"{service}:8000"
    attributes: dict[str, Any]
    if stable:
        attributes = {
            "url.scheme": "http",
            "server.address": service,
            "server.port": 8000,
            "network.protocol.version": "1.1",
            "url.path": target,
            "http.request.method": method,
            "user_agent.original": "python-httpx/0.28.1",
            "client.address": "10.42.0.17",
            "http.route": route,
        }
    else:
        attributes = {
            "http.scheme": "http",
            "http.host": host,
            "net.host.port": 8000,
            "http.flavor": "1.1",
            "http.target": target,
            "http.url": f"http://{host}{target}",
            "http.method": method,
            "http.server_name": host,
            "http.user_agent": "python-httpx/0.28.1",
            "net.peer.ip": "10.42.0.17",
            "net.peer.port": 51234,
            "http.route": route,
        }
    return t.span(
        f"{method} {route}",
        KIND_SERVER,
        start,
        0.0,
        parent,
        scope=FASTAPI,
        attributes=attributes,
        service=service,
    )


def respond(t: Trace, server: Span, at: float, status: int = 200) -> float:
    """The ASGI `http send` spans, then the server span's end; returns that end."""
    key = "http.response.status_code" if "http.request.method" in server.attributes else "http.status_code"
    server.attributes[key] = status
    t.span(
        f"{server.name} http send",
        KIND_INTERNAL,
        at,
        0.08,
        server,
        scope=FASTAPI,
        attributes={"asgi.event.type": "http.response.start", key: status},
    )
    t.span(
        f"{server.name} http send",
        KIND_INTERNAL,
        at + 0.12,
        0.05,
        server,
        scope=FASTAPI,
        attributes={"asgi.event.type": "http.response.body"},
    )
    server.end = at + 0.3
    return server.end


@dataclass(frozen=True)
class Database:
    system: str  # db.system
    name: str  # db.name: the file for SQLite, the database for PostgreSQL
    host: str | None = None
    port: int | None = None
    user: str | None = None
    stable: bool = False  # OTEL_SEMCONV_STABILITY_OPT_IN=database


SQLITE = Database("sqlite", "shop.db")
POSTGRES = Database("postgresql", "shop", "db.internal", 5432, "shop")
POSTGRES_STABLE = Database("postgresql", "shop", "db.internal", 5432, "shop", stable=True)


def _db_attributes(db: Database, statement: str | None, operation: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if db.stable:
        if statement is not None:
            attributes["db.query.text"] = statement
        attributes["db.system.name"] = db.system
        attributes["db.namespace"] = db.name
        if operation is not None:
            attributes["db.operation.name"] = operation
        if db.host is not None:
            attributes["server.address"] = db.host
            attributes["server.port"] = db.port
        return attributes
    if statement is not None:
        attributes["db.statement"] = statement
    attributes["db.system"] = db.system
    attributes["db.name"] = db.name
    if operation is not None:
        attributes["db.operation"] = operation
    if db.host is not None:
        attributes["net.peer.name"] = db.host
        attributes["net.peer.port"] = db.port
        attributes["net.transport"] = "ip_tcp"
    if db.user is not None:
        attributes["db.user"] = db.user
    return attributes


def query(
    t: Trace,
    parent: Span | None,
    start: float,
    duration: float,
    statement: str,
    db: Database = SQLITE,
    *,
    service: str | None = None,
) -> Span:
    """SQLAlchemy's span of one statement (`service`: of a root span; else the parent's)."""
    name = f"{statement.split()[0]} {db.name}"
    return t.span(
        name,
        KIND_CLIENT,
        start,
        duration,
        parent,
        service=service,
        scope=SQLALCHEMY,
        attributes=_db_attributes(db, statement, name),
    )


def connect(
    t: Trace,
    parent: Span | None,
    start: float,
    duration: float,
    db: Database = SQLITE,
    *,
    error: bool = False,
) -> Span:
    """SQLAlchemy's `Engine.connect` span: a checkout from the pool (its wait included)."""
    return t.span(
        "connect",
        KIND_CLIENT,
        start,
        duration,
        parent,
        scope=SQLALCHEMY,
        attributes=_db_attributes(db, None, None),
        error=error,
    )


def driver_echo(t: Trace, of: Span, *, as_child: bool) -> Span:
    """The database driver's instrumentation tracing the same statement again, inside the ORM
    span's time: as its sibling (SQLAlchemy does not make its span current) or its child."""
    statement = of.attributes.get("db.statement") or of.attributes.get("db.query.text")
    system = str(of.attributes.get("db.system") or of.attributes.get("db.system.name"))
    parent = of if as_child else next((s for s in t.spans if s.span_id == of.parent_id), None)
    attributes: dict[str, Any] = {"db.system": system, "db.name": of.attributes.get("db.name", "shop")}
    attributes["db.statement"] = statement
    if system == "postgresql":
        attributes.update({"net.peer.name": "db.internal", "net.peer.port": 5432, "db.user": "shop"})
    return t.span(
        str(statement).split()[0],
        KIND_CLIENT,
        of.start + 0.03,
        of.end - of.start - 0.06,
        parent,
        scope=SQLITE3 if system == "sqlite" else PSYCOPG,
        attributes=attributes,
    )


def http_call(
    t: Trace,
    parent: Span,
    start: float,
    duration: float,
    url: str,
    method: str = "GET",
    *,
    library: str = "httpx",
    status: int = 200,
) -> Span:
    """httpx's client span (stable HTTP conventions) or requests' (old ones)."""
    host = url.split("/")[2]
    name, _, port = host.partition(":")
    if library == "httpx":
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.full": url,
            "server.address": name,
            "server.port": int(port or 80),
            "network.protocol.version": "1.1",
            "http.response.status_code": status,
        }
        scope = HTTPX
    else:
        attributes = {"http.method": method, "http.url": url, "http.status_code": status}
        scope = REQUESTS if library == "requests" else URLLIB3
    return t.span(method, KIND_CLIENT, start, duration, parent, scope=scope, attributes=attributes)


def cache_get(t: Trace, parent: Span, start: float, duration: float, statement: str) -> Span:
    """The Redis instrumentation's span of one command."""
    command = statement.split()[0]
    return t.span(
        command,
        KIND_CLIENT,
        start,
        duration,
        parent,
        scope=REDIS,
        attributes={
            "db.statement": statement,
            "db.redis.args_length": len(statement.split()),
            "db.system": "redis",
            "db.redis.database_index": 0,
            "net.peer.name": "cache.internal",
            "net.peer.port": 6379,
            "net.transport": "ip_tcp",
        },
    )


def memcached_get(t: Trace, parent: Span, start: float, duration: float, key: str) -> Span:
    return t.span(
        "get",
        KIND_CLIENT,
        start,
        duration,
        parent,
        scope=PYMEMCACHE,
        attributes={
            "db.system": "memcached",
            "db.statement": f"get {key}",
            "net.peer.name": "memcached.internal",
            "net.peer.port": 11211,
            "net.transport": "ip_tcp",
        },
    )


def mongo(t: Trace, parent: Span, start: float, duration: float, command: str, collection: str) -> Span:
    return t.span(
        f"shop.{command}",
        KIND_CLIENT,
        start,
        duration,
        parent,
        scope=PYMONGO,
        attributes={
            "db.system": "mongodb",
            "db.name": "shop",
            "db.statement": command,
            "db.mongodb.collection": collection,
            "net.peer.name": "mongo.internal",
            "net.peer.port": 27017,
        },
    )


def internal(t: Trace, parent: Span | None, name: str, start: float, duration: float) -> Span:
    return t.span(name, KIND_INTERNAL, start, duration, parent, scope=APP, attributes={})


# --- the cases ------------------------------------------------------------------------------------

Builder = Callable[[Scene], None]


@dataclass(frozen=True)
class Case:
    name: str
    group: str
    description: str
    build: Builder
    expected: tuple[Expect, ...]

    @property
    def positive(self) -> bool:
        return bool(self.expected)


CASES: list[Case] = []


def case(name: str, group: str, description: str, *expected: Expect) -> Callable[[Builder], Builder]:
    def register(build: Builder) -> Builder:
        CASES.append(Case(name, group, description, build, expected))
        return build

    return register


def ids(rng: random.Random, count: int) -> list[int]:
    return rng.sample(range(1, 5000), count)


LIST_ORDERS = (
    "SELECT orders.id, orders.customer_id, orders.total, orders.created_at FROM orders "
    "ORDER BY orders.created_at DESC LIMIT ? OFFSET ?"
)
CUSTOMER_BY_ID = (
    "SELECT customers.id AS customers_id, customers.name AS customers_name, customers.email AS "
    "customers_email FROM customers WHERE customers.id = ?"
)


def _lazy_loads(
    scene: Scene, route: str, repeats: int, db: Database = SQLITE, *, item_query: str = CUSTOMER_BY_ID
) -> None:
    """A list query, then one query per row: the classic N+1."""
    t = scene.trace()
    server = request(t, "GET", route)
    at = server.child_time()
    at = connect(t, server, at, t.jitter(0.2), db).end + 0.05
    at = query(t, server, at, t.jitter(1.2), LIST_ORDERS, db).end + 0.1
    for _ in range(repeats):
        at = query(t, server, at, t.jitter(0.25), item_query, db).end + t.jitter(0.08)
    respond(t, server, at + 0.5)


# N+1, databases and conventions ----------------------------------------------------------------


@case(
    "n1-sqlite-lazy-load",
    "N+1",
    "SQLite: the orders list, then Order.customer lazy-loaded 25 times",
    n_plus_one("db", 25),
)
def _n1_sqlite(scene: Scene) -> None:
    _lazy_loads(scene, "/orders", 25)


@case(
    "n1-postgresql-psycopg",
    "N+1",
    "PostgreSQL via psycopg (%(pk_1)s parameters): 12 author look-ups after a list",
    n_plus_one("db", 12),
)
def _n1_postgres(scene: Scene) -> None:
    _lazy_loads(
        scene,
        "/orders",
        12,
        POSTGRES,
        item_query="SELECT authors.id, authors.name FROM authors WHERE authors.id = %(pk_1)s::INTEGER",
    )


@case(
    "n1-stable-semconv-asyncpg",
    "N+1",
    "PostgreSQL via asyncpg ($1), stable conventions (db.system.name, db.query.text): 8 repeats",
    n_plus_one("db", 8),
)
def _n1_stable(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/books", stable=True)
    at = server.child_time()
    at = connect(t, server, at, 0.3, POSTGRES_STABLE).end + 0.05
    at = query(
        t, server, at, 2.0, "SELECT books.id, books.author_id FROM books LIMIT $1", POSTGRES_STABLE
    ).end
    for _ in range(8):
        statement = "SELECT authors.id, authors.name FROM authors WHERE authors.id = $1::INTEGER"
        at = query(t, server, at + 0.1, t.jitter(0.6), statement, POSTGRES_STABLE).end
    respond(t, server, at + 0.4)


@case("n1-exactly-5", "N+1", "the smallest loop that is an N+1: 5 repeats", n_plus_one("db", 5))
def _n1_five(scene: Scene) -> None:
    _lazy_loads(scene, "/orders/recent", 5)


@case("short-loop-4", "N+1", "near-miss: a loop of 4 is not an N+1")
def _short_loop(scene: Scene) -> None:
    _lazy_loads(scene, "/orders/recent", 4)


@case(
    "eager-load-selectinload",
    "N+1",
    "near-miss: the list, then one IN (…) query for every row's customer (selectinload)",
)
def _eager(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders")
    at = connect(t, server, server.child_time(), 0.2).end + 0.05
    at = query(t, server, at, 1.3, LIST_ORDERS).end + 0.1
    placeholders = ", ".join("?" for _ in range(25))
    statement = (
        "SELECT customers.id AS customers_id, customers.name AS customers_name FROM customers "
        f"WHERE customers.id IN ({placeholders})"
    )
    at = query(t, server, at, 0.9, statement).end
    respond(t, server, at + 0.6)


@case("distinct-statements", "N+1", "near-miss: seven different queries, each once (a dashboard)")
def _distinct(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/account")
    at = connect(t, server, server.child_time(), 0.2).end + 0.05
    for statement in (
        "SELECT users.id, users.name FROM users WHERE users.id = ?",
        "SELECT carts.id, carts.total FROM carts WHERE carts.user_id = ?",
        "SELECT orders.id, orders.total FROM orders WHERE orders.user_id = ? ORDER BY orders.id DESC LIMIT ?",
        "SELECT addresses.id, addresses.city FROM addresses WHERE addresses.user_id = ?",
        "SELECT wishlist.product_id FROM wishlist WHERE wishlist.user_id = ?",
        "SELECT coupons.code FROM coupons WHERE coupons.user_id = ? AND coupons.used = 0",
        "SELECT count(*) AS count_1 FROM notifications "
        "WHERE notifications.user_id = ? AND notifications.seen = 0",
    ):
        at = query(t, server, at + 0.1, t.jitter(1.5), statement).end
    respond(t, server, at + 0.5)


@case("pagination-3-pages", "N+1", "near-miss: an export reading 3 pages (LIMIT ? OFFSET ?)")
def _pagination(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/products/export")
    at = connect(t, server, server.child_time(), 0.2).end + 0.05
    for _ in range(3):
        statement = (
            "SELECT products.id, products.name, products.price FROM products "
            "ORDER BY products.id LIMIT ? OFFSET ?"
        )
        at = query(t, server, at + 0.2, t.jitter(4.0), statement).end
    respond(t, server, at + 2.0)


@case(
    "n1-in-a-job",
    "N+1",
    "a background job (root INTERNAL span) loading 10 authors one by one: filed under the job's name",
    n_plus_one("db", 10, operation="refresh_author_stats"),
)
def _n1_job(scene: Scene) -> None:
    t = scene.trace()
    job = internal(t, None, "refresh_author_stats", 0.0, 0.0)
    at = connect(t, job, 0.05, 0.3, POSTGRES).end
    at = query(
        t, job, at + 0.1, 3.0, "SELECT authors.id FROM authors WHERE authors.active = true", POSTGRES
    ).end
    for _ in range(10):
        statement = "SELECT count(books.id) AS count_1 FROM books WHERE books.author_id = %(author_id_1)s"
        at = query(t, job, at + 0.1, t.jitter(1.0), statement, POSTGRES).end
    job.end = at + 0.2


@case("n1-pymongo", "N+1", "pymongo: a find per author, one after another (6)", n_plus_one("db", 6))
def _n1_mongo(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/feed")
    at = mongo(t, server, server.child_time(), 2.0, "aggregate", "posts").end
    for _ in range(6):
        at = mongo(t, server, at + 0.1, t.jitter(0.8), "find", "authors").end
    respond(t, server, at + 0.5)


@case(
    "pymongo-collections",
    "N+1",
    "near-miss: pymongo finds on 5 different collections (bare `find` statements, told apart by collection)",
)
def _mongo_collections(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/home")
    at = server.child_time()
    for collection in ("posts", "authors", "comments", "tags", "likes"):
        at = mongo(t, server, at + 0.1, t.jitter(0.8), "find", collection).end
    respond(t, server, at + 0.5)


# N+1, HTTP ----------------------------------------------------------------------------------------


@case(
    "n1-http-httpx",
    "N+1 HTTP",
    "httpx: GET /users/{id} for each of 8 users, one after another",
    n_plus_one("http", 8),
)
def _n1_http(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/dashboard")
    at = server.child_time()
    for user in ids(scene.rng, 8):
        at = http_call(t, server, at + 0.2, t.jitter(8.0), f"http://users:8000/users/{user}").end
    respond(t, server, at + 0.5)


@case(
    "n1-http-requests-urllib3-echo",
    "N+1 HTTP",
    "requests (old conventions) with urllib3's echo of each call as its child: one N+1 of 6",
    n_plus_one("http", 6),
)
def _n1_requests(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/invoices/{invoice_id}", "/invoices/311")
    at = server.child_time()
    for sku in ("A-1001", "B-2002", "C-3003", "D-4004", "E-5005", "F-6006"):
        url = f"http://catalog:8080/api/v1/products/{sku}?fields=name,price"
        call = http_call(t, server, at + 0.2, t.jitter(6.0), url, library="requests")
        http_call(t, call, call.start + 0.2, call.end - call.start - 0.4, url, library="urllib3")
        at = call.end
    respond(t, server, at + 0.5)


@case("http-distinct-endpoints", "N+1 HTTP", "near-miss: five different APIs, one call each")
def _http_distinct(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/checkout/summary")
    at = server.child_time()
    for url in (
        "http://users:8000/users/17",
        "http://carts:8000/carts/17",
        "http://pricing:8000/quotes?cart=17",
        "http://shipping:8000/rates?zip=75011",
        "http://loyalty:8000/points/17",
    ):
        at = http_call(t, server, at + 0.2, t.jitter(5.0), url).end
    respond(t, server, at + 0.5)


# N+1, caches --------------------------------------------------------------------------------------


@case(
    "n1-redis-keys",
    "N+1 cache",
    "Redis: GET authors:<id> for each of 10 books (the command with its key, older instrumentation)",
    n_plus_one("cache", 10),
)
def _n1_redis(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/books")
    at = connect(t, server, server.child_time(), 0.2).end
    at = query(t, server, at + 0.05, 1.1, "SELECT books.id, books.author_id FROM books LIMIT ? OFFSET ?").end
    for author in ids(scene.rng, 10):
        at = cache_get(t, server, at + 0.05, t.jitter(0.3), f"GET authors:{author}").end
    respond(t, server, at + 0.4)


@case(
    "n1-redis-sanitized",
    "N+1 cache",
    "Redis: the same loop as the current instrumentation records it (GET ?), 10 times",
    n_plus_one("cache", 10),
)
def _n1_redis_sanitized(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/books")
    at = server.child_time()
    for _ in range(10):
        at = cache_get(t, server, at + 0.05, t.jitter(0.3), "GET ?").end
    respond(t, server, at + 0.4)


@case(
    "n1-memcached",
    "N+1 cache",
    "Memcached (pymemcache): get authors:<id> 7 times",
    n_plus_one("cache", 7),
)
def _n1_memcached(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/books/popular")
    at = server.child_time()
    for author in ids(scene.rng, 7):
        at = memcached_get(t, server, at + 0.05, t.jitter(0.25), f"authors:{author}").end
    respond(t, server, at + 0.4)


@case("redis-batched", "N+1 cache", "near-miss: one MGET for all keys, then a few different commands")
def _redis_batched(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/books")
    at = server.child_time()
    keys = " ".join(f"authors:{author}" for author in ids(scene.rng, 10))
    for statement in (f"MGET {keys}", "HGETALL settings:storefront", "SMEMBERS featured", "GET banner:home"):
        at = cache_get(t, server, at + 0.05, t.jitter(0.4), statement).end
    respond(t, server, at + 0.4)


# Concurrency and overlaps -------------------------------------------------------------------------


@case(
    "overlap-1ms-is-sequential",
    "concurrency",
    "10 queries of 10 ms, each starting 1 ms before the previous ends (clock skew): a sequential N+1",
    n_plus_one("db", 10, concurrent=False),
)
def _overlap(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/authors", stable=False)
    at = connect(t, server, server.child_time(), 0.2, POSTGRES).end
    at = query(t, server, at + 0.05, 2.0, "SELECT authors.id FROM authors LIMIT %(param_1)s", POSTGRES).end
    at += 1.1  # the first starts after the list; each next one 1 ms before the previous one ends
    for _ in range(10):
        statement = "SELECT books.id, books.title FROM books WHERE %(param_1)s = books.author_id"
        at = query(t, server, at - 1.0, 10.0, statement, POSTGRES).end
    respond(t, server, at + 0.5)


@case(
    "concurrent-motor-finds",
    "concurrency",
    "an async ODM (motor) firing 7 finds within 2 ms: a concurrent N+1",
    n_plus_one("db", 7, concurrent=True),
)
def _motor(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/feed")
    at = mongo(t, server, server.child_time(), 2.0, "aggregate", "posts").end
    ends = [
        mongo(t, server, at + 0.1 + index * 0.3, t.jitter(5.0), "find", "authors").end for index in range(7)
    ]
    respond(t, server, max(ends) + 0.5)


@case(
    "concurrent-api-burst",
    "concurrency",
    "asyncio.gather of 15 identical API calls fired together: a concurrent N+1",
    n_plus_one("http", 15, concurrent=True),
)
def _burst(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/team/{team_id}", "/team/8")
    start = server.child_time()
    ends = [
        http_call(
            t, server, start + index * 0.2, scene.rng.uniform(40.0, 60.0), f"http://users:8000/users/{user}"
        ).end
        for index, user in enumerate(ids(scene.rng, 15))
    ]
    respond(t, server, max(ends) + 0.5)


@case("concurrent-fanout-4", "concurrency", "near-miss: 4 identical calls gathered concurrently")
def _fanout_4(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/team/{team_id}", "/team/9")
    start = server.child_time()
    ends = [
        http_call(t, server, start + index * 0.2, t.jitter(45.0), f"http://users:8000/users/{user}").end
        for index, user in enumerate(ids(scene.rng, 4))
    ]
    respond(t, server, max(ends) + 0.5)


# Interleaving -------------------------------------------------------------------------------------


@case(
    "interleaved-connects",
    "interleaving",
    "each item opens a session: connect, query, 8 times: one N+1 (never one of connects, nor an MN+1)",
    n_plus_one("db", 8),
)
def _interleaved_connects(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders")
    at = connect(t, server, server.child_time(), 0.2).end
    at = query(t, server, at + 0.05, 1.2, LIST_ORDERS).end
    for _ in range(8):
        at = connect(t, server, at + 0.05, t.jitter(0.12)).end
        at = query(t, server, at + 0.05, t.jitter(0.3), CUSTOMER_BY_ID).end
    respond(t, server, at + 0.4)


@case(
    "interleaved-internal-spans",
    "interleaving",
    "a manual span per item between the queries (9 items): one N+1",
    n_plus_one("db", 9),
)
def _interleaved_internal(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders")
    at = connect(t, server, server.child_time(), 0.2).end
    at = query(t, server, at + 0.05, 1.2, LIST_ORDERS).end
    for _ in range(9):
        at = query(t, server, at + 0.05, t.jitter(0.3), CUSTOMER_BY_ID).end
        at = internal(t, server, "render_order_row", at + 0.02, t.jitter(0.4)).end
    respond(t, server, at + 0.4)


@case(
    "interleaved-irregular-cache",
    "interleaving",
    "8 repeats with cache reads of unrelated keys after items 2, 3 and 6: one N+1, no MN+1",
    n_plus_one("db", 8),
)
def _interleaved_cache(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders")
    at = connect(t, server, server.child_time(), 0.2).end
    at = query(t, server, at + 0.05, 1.2, LIST_ORDERS).end
    extra = {2: "GET session:9f86d081", 3: "GET flags:checkout-v2", 6: "HGETALL rates:eur"}
    for item in range(8):
        at = query(t, server, at + 0.05, t.jitter(0.3), CUSTOMER_BY_ID).end
        if item in extra:
            at = cache_get(t, server, at + 0.05, 0.2, extra[item]).end
    respond(t, server, at + 0.4)


# MN+1 ---------------------------------------------------------------------------------------------

GRAPHQL_SEQUENCE = (
    "SELECT authors.id, authors.name FROM authors WHERE authors.id = ?",
    "SELECT reviews.id, reviews.rating FROM reviews WHERE reviews.book_id = ?",
    "SELECT publishers.id, publishers.name FROM publishers WHERE publishers.id = ?",
)


def _graphql(scene: Scene, items: int) -> None:
    t = scene.trace()
    server = request(t, "POST", "/graphql")
    at = connect(t, server, server.child_time(), 0.2).end
    at = query(t, server, at + 0.05, 1.5, "SELECT books.id, books.title FROM books LIMIT ?").end
    for _ in range(items):
        for statement in GRAPHQL_SEQUENCE:
            at = query(t, server, at + 0.05, t.jitter(0.35), statement).end
    respond(t, server, at + 0.8)


@case(
    "mn1-graphql-resolvers",
    "MN+1",
    "GraphQL: a resolver per book running 3 queries (author, reviews, publisher), 10 books: one MN+1",
    mn_plus_one(),
)
def _mn_graphql(scene: Scene) -> None:
    _graphql(scene, 10)


@case(
    "mn1-http-and-query",
    "MN+1",
    "a loop doing an HTTP call and a query per cart item, 6 items: one MN+1",
    mn_plus_one(),
)
def _mn_http_query(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/cart")
    at = connect(t, server, server.child_time(), 0.2).end
    at = query(
        t, server, at + 0.05, 1.0, "SELECT cart_items.sku FROM cart_items WHERE cart_items.cart_id = ?"
    ).end
    for sku in ("A-1001", "B-2002", "C-3003", "D-4004", "E-5005", "F-6006"):
        at = http_call(t, server, at + 0.1, t.jitter(5.0), f"http://inventory:8000/stock/{sku}").end
        at = query(
            t, server, at + 0.05, t.jitter(0.8), "SELECT prices.amount FROM prices WHERE prices.sku = ?"
        ).end
    respond(t, server, at + 0.5)


@case(
    "mn1-exactly-3-repeats",
    "MN+1",
    "the smallest MN+1: a two-query sequence repeated 3 times",
    mn_plus_one(),
)
def _mn_three(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/shelves/{shelf_id}", "/shelves/4")
    at = connect(t, server, server.child_time(), 0.2).end
    at = query(
        t,
        server,
        at + 0.05,
        0.9,
        "SELECT shelf_books.book_id FROM shelf_books WHERE shelf_books.shelf_id = ?",
    ).end
    for _ in range(3):
        at = query(t, server, at + 0.05, t.jitter(0.4), GRAPHQL_SEQUENCE[0]).end
        at = query(t, server, at + 0.05, t.jitter(0.4), GRAPHQL_SEQUENCE[1]).end
    respond(t, server, at + 0.4)


@case("mn1-two-repeats", "MN+1", "near-miss: the resolver sequence for 2 books only")
def _mn_two(scene: Scene) -> None:
    _graphql(scene, 2)


@case(
    "mn1-under-5-percent",
    "MN+1",
    "near-miss: a sequence repeated 3 times, 2.4 ms of the request's 93 ms of queries (< 5 %)",
)
def _mn_small(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/reports/{report_id}", "/reports/12")
    at = connect(t, server, server.child_time(), 0.2).end
    at = query(
        t,
        server,
        at + 0.05,
        90.0,
        "SELECT region, sum(total) FROM orders WHERE created_at > ? GROUP BY region",
    ).end
    for _ in range(3):
        at = query(t, server, at + 0.05, 0.4, GRAPHQL_SEQUENCE[0]).end
        at = query(t, server, at + 0.05, 0.4, GRAPHQL_SEQUENCE[1]).end
    respond(t, server, at + 1.0)


# Consecutive independent calls --------------------------------------------------------------------

AGGREGATES = (
    "SELECT count(*) AS count_1 FROM orders WHERE orders.created_at >= '2026-11-01 00:00:00'",
    "SELECT sum(orders.total) AS sum_1 FROM orders WHERE orders.status = 'paid' AND orders.day = now()::date",
    "SELECT avg(reviews.rating) AS avg_1 FROM reviews WHERE reviews.text NOT LIKE '%?%'",
)


def _aggregates(
    scene: Scene, duration: float, statements: tuple[str, ...], db: Database, total: float
) -> None:
    t = scene.trace()
    server = request(t, "GET", "/admin/stats")
    at = connect(t, server, server.child_time(), 0.3, db).end
    for statement in statements:
        at = query(t, server, at + 0.5, duration, statement, db).end
    internal(t, server, "render_stats", at + 0.2, 2.0)
    respond(t, server, total - 0.3)


@case(
    "consecutive-independent-queries",
    "consecutive",
    "3 unparameterised aggregates of 60 ms one after another in a 250 ms request: parallel saves 120 ms",
    consecutive("db"),
)
def _consecutive(scene: Scene) -> None:
    _aggregates(scene, 60.0, AGGREGATES, POSTGRES, 250.0)


@case(
    "consecutive-paged-lists",
    "consecutive",
    "3 × 60 ms lists of different tables whose only parameters are LIMIT/OFFSET (no result needed)",
    consecutive("db"),
)
def _consecutive_paged(scene: Scene) -> None:
    pages = (
        "SELECT products.id, products.name FROM products ORDER BY products.id LIMIT ? OFFSET ?",
        "SELECT orders.id, orders.total FROM orders ORDER BY orders.id DESC LIMIT ?",
        "SELECT reviews.id, reviews.rating FROM reviews ORDER BY reviews.id DESC LIMIT ? OFFSET ?",
    )
    _aggregates(scene, 60.0, pages, SQLITE, 250.0)


@case("consecutive-fast-queries", "consecutive", "near-miss: the same 3 aggregates at 10 ms (saves 20 ms)")
def _consecutive_fast(scene: Scene) -> None:
    _aggregates(scene, 10.0, AGGREGATES, POSTGRES, 60.0)


@case(
    "consecutive-dependent-chain",
    "consecutive",
    "near-miss: 3 × 60 ms parameterised queries, each needing the previous one's result",
)
def _consecutive_dependent(scene: Scene) -> None:
    chain = (
        "SELECT users.id, users.team_id FROM users WHERE users.email = %(email_1)s",
        "SELECT teams.plan_id FROM teams WHERE teams.id = %(pk_1)s",
        "SELECT plans.quota FROM plans WHERE plans.id = %(pk_1)s",
    )
    _aggregates(scene, 60.0, chain, POSTGRES, 250.0)


@case(
    "consecutive-independent-gets",
    "consecutive",
    "3 GETs of 200 ms to three services one after another (and the 620 ms request is slow)",
    consecutive("http"),
    slow("GET /products/{product_id}/page"),
)
def _consecutive_http(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/products/{product_id}/page", "/products/77/page")
    at = server.child_time()
    for url in (
        "http://pricing:8000/prices/77",
        "http://inventory:8000/stock/77",
        "http://reviews:8000/reviews?product=77",
    ):
        at = http_call(t, server, at + 1.0, 200.0, url).end
    respond(t, server, at + 15.0)


@case(
    "consecutive-posts",
    "consecutive",
    "near-miss: 3 POSTs of 200 ms (not independent); only the slow request is reported",
    slow("POST /orders"),
)
def _consecutive_posts(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "POST", "/orders")
    at = server.child_time()
    for url in (
        "http://payments:8000/charges",
        "http://inventory:8000/reservations",
        "http://mailer:8000/messages",
    ):
        at = http_call(t, server, at + 1.0, 200.0, url, "POST", status=201).end
    respond(t, server, at + 15.0, 201)


# Clock skew ---------------------------------------------------------------------------------------


def _cross_service(scene: Scene, skew_ms: float, repeats: int) -> None:
    """gateway → authors service, whose host clock is `skew_ms` off; the loop runs in the callee."""
    t = scene.trace(skew_ms={"authors": skew_ms})
    front = request(t, "GET", "/api/authors/{author_id}", "/api/authors/5", service="gateway")
    call = http_call(t, front, front.child_time() + 0.3, 0.0, "http://authors:8000/authors/5")
    server = request(
        t, "GET", "/authors/{author_id}", "/authors/5", start=call.start + 0.6, service="authors", parent=call
    )
    at = connect(t, server, server.child_time(), 0.2, POSTGRES).end
    at = query(
        t, server, at + 0.05, 1.0, "SELECT authors.id FROM authors WHERE authors.id = %(pk_1)s", POSTGRES
    ).end
    for _ in range(repeats):
        statement = "SELECT books.id FROM books WHERE books.id = %(pk_1)s"
        at = query(t, server, at + 0.1, t.jitter(0.8), statement, POSTGRES).end
    call.end = respond(t, server, at + 0.3) + 0.5
    respond(t, front, call.end + 0.3)


@case(
    "skew-child-before-parent",
    "clock skew",
    "the callee's host is 40 ms behind: its server span starts before the client span that made it; "
    "N+1 of 6 in the callee",
    n_plus_one("db", 6, operation="GET /authors/{author_id}"),
)
def _skew_behind(scene: Scene) -> None:
    _cross_service(scene, -40.0, 6)


@case(
    "skew-host-ahead",
    "clock skew",
    "the callee's host is 2.5 s ahead: its spans end long after the trace's root; N+1 of 8 in the callee",
    n_plus_one("db", 8, operation="GET /authors/{author_id}"),
)
def _skew_ahead(scene: Scene) -> None:
    _cross_service(scene, 2500.0, 8)


@case("skew-host-short-loop", "clock skew", "near-miss: the skewed callee runs a loop of 4")
def _skew_short(scene: Scene) -> None:
    _cross_service(scene, -40.0, 4)


# Driver echoes ------------------------------------------------------------------------------------


@case(
    "echo-sqlite3-siblings",
    "echoes",
    "sqlite3's instrumentation echoes each of 10 ORM queries as a sibling inside its time: one N+1 of 10",
    n_plus_one("db", 10, concurrent=False),
)
def _echo_siblings(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders")
    at = connect(t, server, server.child_time(), 0.2).end
    driver_echo(t, query(t, server, at + 0.05, 1.2, LIST_ORDERS), as_child=False)
    at += 1.3
    for _ in range(10):
        span = query(t, server, at + 0.05, t.jitter(0.4), CUSTOMER_BY_ID)
        driver_echo(t, span, as_child=False)
        at = span.end
    respond(t, server, at + 0.4)


@case(
    "echo-psycopg-children",
    "echoes",
    "psycopg's instrumentation echoes each of 6 ORM queries as its child: one N+1 of 6",
    n_plus_one("db", 6),
)
def _echo_children(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders")
    at = connect(t, server, server.child_time(), 0.2, POSTGRES).end
    for _ in range(6):
        statement = "SELECT customers.name FROM customers WHERE customers.id = %(pk_1)s::INTEGER"
        span = query(t, server, at + 0.05, t.jitter(0.5), statement, POSTGRES)
        driver_echo(t, span, as_child=True)
        at = span.end
    respond(t, server, at + 0.4)


@case("echo-short-loop-4", "echoes", "near-miss: a loop of 4, each query echoed (8 spans, 4 queries)")
def _echo_short(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders/recent")
    at = connect(t, server, server.child_time(), 0.2).end
    for _ in range(4):
        span = query(t, server, at + 0.05, t.jitter(0.4), CUSTOMER_BY_ID)
        driver_echo(t, span, as_child=False)
        at = span.end
    respond(t, server, at + 0.4)


# Unused eager loads (the app's ORM hook marks the loading query's span; exported traces keep it) ---

EAGER_UNUSED = "perf.orm.eager_unused"


def _orders_with_items(scene: Scene, marks: dict[str, Any]) -> None:
    """GET /orders: the orders, then their items by selectinload (one `IN (…)` query)."""
    t = scene.trace()
    server = request(t, "GET", "/orders")
    at = query(t, server, server.child_time(), 2.0, "SELECT orders.id, orders.total FROM orders LIMIT ?").end
    items = query(
        t,
        server,
        at + 0.1,
        6.0,
        "SELECT items.order_id, items.id, items.sku FROM items WHERE items.order_id IN (?, ?, ?, ?)",
    )
    items.attributes.update(marks)
    respond(t, server, items.end + 1.0)


@case(
    "unused-selectinload",
    "unused eager load",
    "selectinload(Order.items) whose items the request never read (marked by the ORM hook)",
    unused_eager_load(),
)
def _unused_selectin(scene: Scene) -> None:
    _orders_with_items(scene, {EAGER_UNUSED: ["Order.items"], f"{EAGER_UNUSED}.strategy": ["selectinload"]})


@case("used-selectinload", "unused eager load", "near-miss: the same eager load, read (no mark)")
def _used_selectin(scene: Scene) -> None:
    _orders_with_items(scene, {})


# Start-up and background --------------------------------------------------------------------------

TABLES = ("customers", "orders", "order_items", "products", "reviews", "coupons")


def _create_all(scene: Scene, slow_index: bool) -> float:
    """`metadata.create_all()` at start-up: a connect, then per table a PRAGMA and a CREATE TABLE,
    each a root span of its own trace (no request is active)."""
    connect(scene.trace(0.0), None, 0.0, 1.5)
    at = 2.0
    for table in TABLES:
        t = scene.trace(at)
        query(t, None, 0.0, 0.2, f'PRAGMA main.table_info("{table}")')
        t = scene.trace(at + 0.4)
        query(t, None, 0.0, t.jitter(2.0), f"CREATE TABLE {table} (id INTEGER NOT NULL, PRIMARY KEY (id))")
        at += 3.0
    if slow_index:
        t = scene.trace(at)
        query(t, None, 0.0, 350.0, "CREATE INDEX ix_orders_customer_id ON orders (customer_id)")
        at += 351.0
    return at


@case(
    "startup-ddl",
    "start-up",
    "create_all at start-up: a connect and 12 bare root statements (PRAGMA, CREATE TABLE), none slow",
)
def _startup(scene: Scene) -> None:
    _create_all(scene, slow_index=False)


@case(
    "startup-slow-ddl",
    "start-up",
    "create_all whose CREATE INDEX takes 350 ms, before any request: slow_span filed under `startup`",
    slow("startup"),
)
def _startup_slow(scene: Scene) -> None:
    at = _create_all(scene, slow_index=True)
    t = scene.trace(at + 5_000)
    server = request(t, "GET", "/health")
    respond(t, server, 1.0)


@case(
    "background-slow-query",
    "start-up",
    "a 240 ms bare DELETE after requests were served (a cleanup thread): slow_span filed under `background`",
    slow("background"),
)
def _background(scene: Scene) -> None:
    t = scene.trace(0.0)
    server = request(t, "GET", "/health")
    respond(t, server, 1.0)
    t = scene.trace(60_000.0)
    query(t, None, 0.0, 240.0, "DELETE FROM sessions WHERE sessions.expires_at < ?")


# Slow spans and pool waits ------------------------------------------------------------------------


@case(
    "slow-request-and-query",
    "slow",
    "an 820 ms request whose 700 ms query dominates: both are slow",
    slow("GET /reports/sales"),
    slow("GET /reports/sales"),
)
def _slow_both(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/reports/sales")
    at = connect(t, server, server.child_time(), 0.3, POSTGRES).end
    statement = (
        "SELECT date_trunc('day', orders.created_at), sum(orders.total) FROM orders "
        "WHERE orders.created_at > %(since)s GROUP BY 1"
    )
    at = query(t, server, at + 0.1, 700.0, statement, POSTGRES).end
    respond(t, server, 820.0 - 0.3)


@case("slow-query", "slow", "a 180 ms query in a 230 ms request", slow("GET /search"))
def _slow_query(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/search")
    at = connect(t, server, server.child_time(), 0.3, POSTGRES).end
    statement = (
        "SELECT products.id FROM products WHERE products.name ILIKE %(pattern)s "
        "ORDER BY products.rank LIMIT %(param_1)s"
    )
    query(t, server, at + 0.1, 180.0, statement, POSTGRES)
    respond(t, server, 230.0 - 0.3)


@case(
    "near-slow-request", "slow", "near-miss: a 480 ms request with a 95 ms query and 370 ms of its own work"
)
def _near_slow(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/recommendations")
    at = connect(t, server, server.child_time(), 0.3, POSTGRES).end
    statement = "SELECT ratings.product_id, ratings.score FROM ratings WHERE ratings.user_id = %(pk_1)s"
    at = query(t, server, at + 0.1, 95.0, statement, POSTGRES).end
    internal(t, server, "rank_candidates", at + 0.5, 370.0)
    respond(t, server, 480.0 - 0.3)


@case(
    "slow-outgoing-call",
    "slow",
    "a job's 1.5 s GET to a partner API: slow_span filed under the job",
    slow("sync_catalog"),
)
def _slow_call(scene: Scene) -> None:
    t = scene.trace()
    job = internal(t, None, "sync_catalog", 0.0, 0.0)
    call = http_call(t, job, 0.1, 1500.0, "https://partner.example.com/v2/catalog?since=2026-10-31")
    job.end = call.end + 3.0


@case("near-slow-call", "slow", "near-miss: the same job's GET at 900 ms")
def _near_slow_call(scene: Scene) -> None:
    t = scene.trace()
    job = internal(t, None, "sync_catalog", 0.0, 0.0)
    call = http_call(t, job, 0.1, 900.0, "https://partner.example.com/v2/catalog?since=2026-10-31")
    job.end = call.end + 3.0


@case("pool-wait", "pool", "a request waited 350 ms for a pooled connection", pool_wait())
def _pool(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders/{order_id}", "/orders/42")
    at = connect(t, server, server.child_time(), 350.0, POSTGRES).end
    at = query(
        t, server, at + 0.1, 2.0, "SELECT orders.id FROM orders WHERE orders.id = %(pk_1)s", POSTGRES
    ).end
    at = query(
        t,
        server,
        at + 0.1,
        1.5,
        "SELECT order_items.sku FROM order_items WHERE order_items.order_id = %(param_1)s",
        POSTGRES,
    ).end
    respond(t, server, at + 0.5)


@case("pool-near-miss", "pool", "near-miss: a 150 ms checkout (a new connection's handshake)")
def _pool_near(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders/{order_id}", "/orders/43")
    at = connect(t, server, server.child_time(), 150.0, POSTGRES).end
    at = query(
        t, server, at + 0.1, 2.0, "SELECT orders.id FROM orders WHERE orders.id = %(pk_1)s", POSTGRES
    ).end
    respond(t, server, at + 0.5)


# More traps ---------------------------------------------------------------------------------------


@case(
    "n1-two-loops",
    "N+1",
    "two loops one after the other (each order's customer, then each order's items), 8 each: "
    "two N+1s, no MN+1",
    n_plus_one("db", 8),
    n_plus_one("db", 8),
)
def _two_loops(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders")
    at = connect(t, server, server.child_time(), 0.2).end
    at = query(t, server, at + 0.05, 1.2, LIST_ORDERS).end
    for _ in range(8):
        at = query(t, server, at + 0.05, t.jitter(0.3), CUSTOMER_BY_ID).end
    for _ in range(8):
        statement = "SELECT order_items.sku, order_items.qty FROM order_items WHERE ? = order_items.order_id"
        at = query(t, server, at + 0.05, t.jitter(0.3), statement).end
    respond(t, server, at + 0.4)


@case(
    "n1-split-across-parents",
    "N+1",
    "near-miss: 4 look-ups under each of two service-layer spans (never 5 under one parent)",
)
def _split_parents(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/compare")
    at = connect(t, server, server.child_time(), 0.2).end
    for name in ("load_left", "load_right"):
        section = internal(t, server, name, at + 0.05, 0.0)
        at = section.start + 0.05
        for _ in range(4):
            at = query(t, section, at + 0.05, t.jitter(0.3), CUSTOMER_BY_ID).end
        section.end = at + 0.05
        at = section.end
    respond(t, server, at + 0.4)


@case(
    "n1-http-slugs-cross-service",
    "N+1 HTTP",
    "6 calls to /authors/<slug> (URLs the template keeps apart) whose server spans share a route: one N+1",
    n_plus_one("http", 6),
)
def _slugs(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/shelf", service="gateway")
    at = server.child_time()
    for slug in (
        "jane-austen",
        "leo-tolstoy",
        "mary-shelley",
        "george-eliot",
        "toni-morrison",
        "italo-calvino",
    ):
        call = http_call(t, server, at + 0.2, 0.0, f"http://authors:8000/authors/{slug}")
        callee = request(
            t,
            "GET",
            "/authors/{slug}",
            f"/authors/{slug}",
            start=call.start + 0.4,
            service="authors",
            parent=call,
        )
        done = query(
            t,
            callee,
            callee.child_time(),
            t.jitter(0.8),
            "SELECT authors.id, authors.bio FROM authors WHERE authors.slug = %(slug_1)s",
            POSTGRES,
        ).end
        call.end = respond(t, callee, done + 0.2) + 0.3
        at = call.end
    respond(t, server, at + 0.4)


@case(
    "mn1-cache-aside",
    "MN+1",
    "cache-aside per product: Redis GET (a miss), the query, Redis SET, 6 products: one MN+1",
    mn_plus_one(),
)
def _mn_cache_aside(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/products/featured")
    at = connect(t, server, server.child_time(), 0.2).end
    for _ in range(6):
        at = cache_get(t, server, at + 0.05, t.jitter(0.3), "GET ?").end
        at = query(
            t,
            server,
            at + 0.05,
            t.jitter(0.6),
            "SELECT products.id, products.name FROM products WHERE products.id = ?",
        ).end
        at = cache_get(t, server, at + 0.05, t.jitter(0.3), "SET ? ? ? ?").end
    respond(t, server, at + 0.4)


@case(
    "redis-pipeline",
    "N+1 cache",
    "near-miss: 10 GETs sent as one pipeline (one span)",
)
def _redis_pipeline(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/books")
    span = cache_get(t, server, server.child_time(), 0.9, "\n".join("GET ?" for _ in range(10)))
    span.name = " ".join("GET" for _ in range(10))
    span.attributes["db.redis.pipeline_length"] = 10
    respond(t, server, span.end + 0.4)


@case(
    "consecutive-already-concurrent",
    "consecutive",
    "near-miss: the 3 aggregates of 60 ms gathered concurrently",
)
def _aggregates_gathered(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/admin/stats")
    start = server.child_time()
    ends = [
        query(t, server, start + index * 0.3, 60.0, statement, POSTGRES).end
        for index, statement in enumerate(AGGREGATES)
    ]
    respond(t, server, max(ends) + 2.0)


@case(
    "startup-seed-inserts",
    "start-up",
    "near-miss: 12 INSERTs seeding data at start-up, each a root span of its own trace (no common parent)",
)
def _seed(scene: Scene) -> None:
    for index in range(12):
        t = scene.trace(index * 1.0)
        query(t, None, 0.0, t.jitter(0.5), "INSERT INTO products (name, price) VALUES (?, ?)")


@case(
    "pool-timeout",
    "pool",
    "a checkout that timed out after 5 s (QueuePool limit reached): the wait, and the slow request",
    pool_wait(),
    slow("GET /orders/{order_id}"),
)
def _pool_timeout(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/orders/{order_id}", "/orders/44")
    at = connect(t, server, server.child_time(), 5000.0, POSTGRES, error=True).end
    server.error = True
    respond(t, server, at + 2.0, 500)


@case(
    "consecutive-with-dependent-ones",
    "consecutive",
    "2 independent aggregates of 90 ms, then 2 dependent queries of 70 ms, in a 350 ms request: "
    "concurrently it would take max(90, 140) ms, 180 ms saved",
    consecutive("db"),
)
def _consecutive_mixed(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/admin/overview")
    at = connect(t, server, server.child_time(), 0.3, POSTGRES).end
    for duration, statement in (
        (90.0, AGGREGATES[0]),
        (90.0, AGGREGATES[2]),
        (70.0, "SELECT users.id FROM users WHERE users.email = %(email_1)s"),
        (70.0, "SELECT audit_log.id FROM audit_log WHERE audit_log.user_id = %(user_id_1)s"),
    ):
        at = query(t, server, at + 0.5, duration, statement, POSTGRES).end
    respond(t, server, 350.0 - 0.3)


@case(
    "consecutive-under-10-percent",
    "consecutive",
    "near-miss: the 3 aggregates of 60 ms (120 ms to save) in a 1.5 s request, 8 % of it; "
    "only the slow request is reported",
    slow("GET /admin/stats"),
)
def _consecutive_small_share(scene: Scene) -> None:
    t = scene.trace()
    server = request(t, "GET", "/admin/stats")
    at = connect(t, server, server.child_time(), 0.3, POSTGRES).end
    for statement in AGGREGATES:
        at = query(t, server, at + 0.5, 60.0, statement, POSTGRES).end
    internal(t, server, "render_pdf", at + 0.5, 1300.0)
    respond(t, server, 1500.0 - 0.3)


@case(
    "startup-of-a-second-service",
    "start-up",
    "the worker's slow start-up DDL after the shop (another service) served requests: `startup`",
    slow("startup"),
)
def _startup_worker(scene: Scene) -> None:
    t = scene.trace(0.0)
    respond(t, request(t, "GET", "/health"), 1.0)
    t = scene.trace(10_000.0)
    query(t, None, 0.0, 400.0, "CREATE INDEX ix_jobs_due_at ON jobs (due_at)", POSTGRES, service="worker")
    t = scene.trace(20_000.0)
    respond(t, request(t, "POST", "/jobs/run", service="worker"), 2.0)


# The listing order: each pattern beside its near-misses.
GROUPS = (
    "N+1",
    "N+1 HTTP",
    "N+1 cache",
    "concurrency",
    "interleaving",
    "MN+1",
    "consecutive",
    "clock skew",
    "echoes",
    "start-up",
    "slow",
    "pool",
    "unused eager load",
)
CASES.sort(key=lambda each: GROUPS.index(each.group))


def build(case_: Case, seed: int) -> list[str]:
    """The case's OTLP JSON lines (deterministic per seed and case name)."""
    scene = Scene(random.Random(f"{seed}/{case_.name}"))
    case_.build(scene)
    return scene.lines()


def iter_cases(selected: str | None = None) -> Iterator[Case]:
    for each in CASES:
        if selected is None or selected in each.name or selected == each.group:
            yield each
