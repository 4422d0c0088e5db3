"""Realistic OTLP trace requests for load: each trace one request of a FastAPI + SQLAlchemy
service (a server span, 5 queries, 3 outgoing HTTP calls, 2 internal spans; with an N+1, 15 more
queries in a loop), as protobuf `ExportTraceServiceRequest`s, serialised once up front."""

from __future__ import annotations

import os
import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

SPANS_PER_TRACE = 26
_MS = 1_000_000


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _trace(rng: random.Random, start_ns: int, routes: list[str], n_plus_one: bool) -> list[Span]:
    trace_id = rng.randbytes(16)
    ids = iter(rng.randbytes(8) for _ in range(SPANS_PER_TRACE))
    root_id = next(ids)
    route = rng.choice(routes)
    at = start_ns + _MS
    spans: list[Span] = []

    def child(
        name: str, kind: int, duration_ms: float, attributes: list[KeyValue], parent: bytes = root_id
    ) -> None:
        nonlocal at
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=next(ids),
                parent_span_id=parent,
                name=name,
                kind=kind,
                start_time_unix_nano=at,
                end_time_unix_nano=at + int(duration_ms * _MS),
                attributes=attributes,
            )
        )
        at += int(duration_ms * _MS) + 50_000

    child("authenticate", 1, 0.3, [])
    child(
        "SELECT shop",
        3,
        0.8,
        [
            _kv("db.system", "postgresql"),
            _kv("db.name", "shop"),
            _kv("db.statement", "SELECT orders.id, orders.customer_id FROM orders LIMIT %(param_1)s"),
        ],
    )
    for item in range(15 if n_plus_one else 0):
        child(
            "SELECT shop",
            3,
            rng.uniform(0.2, 0.6),
            [
                _kv("db.system", "postgresql"),
                _kv("db.name", "shop"),
                _kv(
                    "db.statement",
                    f"SELECT customers.id, customers.name FROM customers WHERE customers.id = {item}",
                ),
                _kv("code.file.path", "/srv/app/main.py"),
                _kv("code.line.number", 82),
                _kv("code.function.name", "list_orders"),
            ],
        )
    for table in ("inventory", "prices", "discounts", "stock"):
        child(
            "SELECT shop",
            3,
            rng.uniform(0.3, 2.0),
            [
                _kv("db.system", "postgresql"),
                _kv("db.statement", f"SELECT * FROM {table} WHERE sku = %(sku)s"),
            ],
        )
    for service in ("payments", "shipping", "tax"):
        child(
            f"GET {service}",
            3,
            rng.uniform(2, 8),
            [
                _kv("http.request.method", "GET"),
                _kv("url.full", f"http://{service}.internal:8080/v1/quote/{rng.randint(1, 10**6)}"),
                _kv("http.response.status_code", 200),
            ],
        )
    child("serialize", 1, 0.4, [])
    root = Span(
        trace_id=trace_id,
        span_id=root_id,
        name=f"GET {route}",
        kind=2,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=at + _MS,
        status=Status(code=0),
        attributes=[
            _kv("http.route", route),
            _kv("http.request.method", "GET"),
            _kv("http.response.status_code", 200),
        ],
    )
    return [root, *spans]


def requests(
    count: int, traces_per_request: int = 20, n_plus_one_share: float = 1.0, seed: int = 7
) -> list[bytes]:
    """`count` serialised requests of `traces_per_request` whole traces each; `n_plus_one_share` of
    the traces carry the N+1 (26 spans), the others are healthy requests (11 spans)."""
    rng = random.Random(seed)
    routes = ["/orders", "/orders/{id}", "/customers", "/cart", "/checkout", "/search"]
    resource = Resource(
        attributes=[
            _kv("service.name", "shop"),
            _kv("service.version", "1.4.2"),
            _kv("host.name", os.uname().nodename),
        ]
    )
    scope = InstrumentationScope(name="opentelemetry.instrumentation.sqlalchemy", version="0.66b1")
    out = []
    start = 1_795_000_000 * 10**9
    for number in range(count):
        spans = [
            span
            for index in range(traces_per_request)
            for span in _trace(
                rng,
                start + (number * traces_per_request + index) * 20 * _MS,
                routes,
                rng.random() < n_plus_one_share,
            )
        ]
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])
            ]
        )
        out.append(request.SerializeToString())
    return out
