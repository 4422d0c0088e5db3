"""Hand-built spans and trees for detector tests (times in milliseconds, converted to ns)."""

from __future__ import annotations

import itertools
from typing import Any

from otel_perf.processors.sources import fill_from_attributes
from otel_perf.processors.tree import KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, SpanNode, TraceTree

MS = 1_000_000
_ids = itertools.count(1)


def node(
    name: str,
    start_ms: float,
    end_ms: float,
    *,
    parent: SpanNode | None = None,
    kind: int = KIND_INTERNAL,
    service: str = "shop",
    attributes: dict[str, Any] | None = None,
    span_id: int | None = None,
) -> SpanNode:
    attributes = dict(attributes or {})
    result = SpanNode(
        span_id if span_id is not None else next(_ids),
        parent.span_id if parent is not None else None,
        name,
        kind,
        int(start_ms * MS),
        int(end_ms * MS),
        service,
        attributes=attributes,
    )
    fill_from_attributes(result, attributes)
    return result


def server(name: str, start_ms: float, end_ms: float, **kwargs: Any) -> SpanNode:
    route = name.split(" ", 1)[1] if " " in name else None
    attributes = {"http.request.method": name.split(" ")[0], **({"http.route": route} if route else {})}
    attributes.update(kwargs.pop("attributes", {}) or {})
    return node(name, start_ms, end_ms, kind=KIND_SERVER, attributes=attributes, **kwargs)


def query(
    statement: str,
    start_ms: float,
    end_ms: float,
    parent: SpanNode | None,
    *,
    extra: dict | None = None,
    **kw: Any,
) -> SpanNode:
    attributes = {"db.system": "postgresql", "db.statement": statement, **(extra or {})}
    return node(
        statement.split(" ")[0],
        start_ms,
        end_ms,
        parent=parent,
        kind=KIND_CLIENT,
        attributes=attributes,
        **kw,
    )


def http_call(
    url: str, start_ms: float, end_ms: float, parent: SpanNode, method: str = "GET", **kw: Any
) -> SpanNode:
    attributes = {"http.method": method, "http.url": url}
    return node(method, start_ms, end_ms, parent=parent, kind=KIND_CLIENT, attributes=attributes, **kw)


def loop(
    parent: SpanNode,
    statements: list[str],
    *,
    start_ms: float = 1.0,
    each_ms: float = 1.0,
    gap_ms: float = 0.1,
) -> list[SpanNode]:
    """One query per statement, back to back (a loop), starting at `start_ms`."""
    spans = []
    at = start_ms
    for statement in statements:
        spans.append(query(statement, at, at + each_ms, parent))
        at += each_ms + gap_ms
    return spans


def tree(*nodes: SpanNode | list[SpanNode], trace_id: int = 0xABC) -> TraceTree:
    flat: list[SpanNode] = []
    for item in nodes:
        flat.extend(item if isinstance(item, list) else [item])
    return TraceTree(trace_id, flat)


class RecordingSink:
    """An alert sink that keeps what it was given (a test double for Slack, PagerDuty, …)."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.alerts: list[Any] = []

    def send(self, alert: Any) -> None:
        self.alerts.append(alert)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
