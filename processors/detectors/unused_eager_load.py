"""Unused eager loads: a relationship a query loaded eagerly (selectinload, joinedload, subqueryload,
`lazy="selectin"`, …) whose objects the request never read.

Trace-only tools can't see this: a span shows the query, not whether its rows were used. The SDK
host learns it from SQLAlchemy's own events (`processors.orm`) and leaves it on the loading query's
span as `perf.orm.eager_unused` (with `….strategy`), so this detector, reading only the tree, finds
it in-process and in exported traces (`otel-perf analyze`); the analyzer skips it (see
`TraceShape.eager_unused`: the app that made the mark has reported it). The cost is the loading
query's time: exact for a selectin/subquery load (a query of its own), an upper bound for a joined
load (the parent query, which the join made dearer).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors import semconv
from otel_perf.processors.config import ScopedSection
from otel_perf.processors.detectors.base import operation_of
from otel_perf.processors.detectors.calls import is_echo
from otel_perf.processors.findings import Finding, fingerprint, severity_by_thresholds
from otel_perf.processors.normalize import normalize_sql
from otel_perf.processors.tree import KIND_CLIENT, SpanNode, TraceShape, TraceTree

TYPE = "unused_eager_load"


class UnusedEagerLoadSettings(ScopedSection):
    """`OTEL_PERF_UNUSED_EAGER_LOAD_*`"""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_UNUSED_EAGER_LOAD_")
    # Counted by the SDK host across requests, before a trace's findings are sought.
    unscoped: ClassVar[frozenset[str]] = frozenset({"min_requests"})

    enabled: bool = Field(
        True, description="Report relationships loaded eagerly whose objects the request never read."
    )
    min_requests: int = Field(
        3,
        ge=1,
        le=1000,
        description="Reported once an endpoint's analysed requests left the loaded objects unread this "
        "many times in a row (a read starts over): a relationship read on some requests only is not "
        "unused. 1: from the first request.",
    )
    medium_ms: float = Field(
        50, ge=0, description="Time of the query that loaded them from which severity is medium."
    )
    high_ms: float = Field(250, ge=0, description="… high.")


def _strings(value: object) -> list[str]:
    """A string-array attribute as a list (SDK tuples, OTLP lists; a lone string too)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(each) for each in value]
    return []


def _suggestion(relationship: str, strategy: str) -> str:
    """Where the eager load was written: on the query (an option) or on the relationship."""
    if strategy.startswith("lazy="):
        return (
            f"{relationship} is configured {strategy}, so every query of its parent loads it: make it "
            f'lazy="select" (or lazy="raise", to catch accidental loads) and add '
            f".options(selectinload({relationship})) only to the queries whose callers read it"
        )
    return (
        f"drop .options({strategy}({relationship})) from this query: nothing read {relationship}; "
        f"if a caller needs it, load it there, or use raiseload({relationship}) here to catch "
        "accidental loads (defer() the columns you don't need, too)"
    )


class UnusedEagerLoadDetector:
    name: ClassVar[str] = TYPE

    def __init__(self, settings: UnusedEagerLoadSettings | None = None) -> None:
        self.settings = settings or UnusedEagerLoadSettings()

    def could_match(self, shape: TraceShape) -> bool:
        return shape.eager_unused  # see `TraceShape.eager_unused`

    def detect(self, tree: TraceTree) -> Iterator[Finding]:
        # (operation, relationship) → [(query span, strategy)]: one finding per relationship and
        # operation, however many queries (selectin chunks, repeated queries) loaded it.
        groups: dict[tuple[str, str], list[tuple[SpanNode, str]]] = {}
        for node in tree.walk():
            if node.kind != KIND_CLIENT or node.statement is None:
                continue
            attributes = node.attributes
            relationships = _strings(attributes.get(semconv.PERF_ORM_EAGER_UNUSED))
            if not relationships or is_echo(node):  # the driver's copy of the ORM's query: once
                continue
            entry = tree.entry_span(node)
            if entry.is_error or (entry.http_status or 0) >= 400:
                # A request that failed stopped before reading what it loaded: the success path
                # may need the load (dropping it there would break it).
                continue
            strategies = _strings(attributes.get(semconv.PERF_ORM_EAGER_UNUSED_STRATEGY))
            operation = operation_of(tree, node)
            for index, relationship in enumerate(relationships):
                strategy = strategies[index] if index < len(strategies) else "eager load"
                groups.setdefault((operation, relationship), []).append((node, strategy))
        for (operation, relationship), loads in groups.items():
            yield self._finding(tree, operation, relationship, loads)

    def _finding(
        self, tree: TraceTree, operation: str, relationship: str, loads: list[tuple[SpanNode, str]]
    ) -> Finding:
        first, strategy = loads[0]
        settings = self.settings.at(first.service, operation)
        queries: list[SpanNode] = []
        for node, _ in loads:
            if node not in queries:
                queries.append(node)
        wasted_ms = sum(node.duration_ms for node in queries)
        joined = strategy.startswith("joined") or strategy == 'lazy="joined"'
        statement = normalize_sql(first.statement or "", first.db_system)
        details: dict[str, object] = {
            "kind": "db",
            "relationship": relationship,
            "strategy": strategy,
            "statement": statement,
            "wasted_ms": round(wasted_ms, 3),
            # A joined load has no query of its own: the whole loading query is what it cost at most.
            "wasted_ms_is_upper_bound": joined,
            "queries": len(queries),
        }
        if first.db_system:
            details["db_system"] = first.db_system
        if first.code_location is not None:
            details["code_location"] = first.code_location
        details["suggestion"] = _suggestion(relationship, strategy)
        severity = severity_by_thresholds(wasted_ms, settings.medium_ms, settings.high_ms, float("inf"))
        bound = "≤ " if joined else ""
        return Finding(
            type=TYPE,
            severity=severity,
            service=first.service,
            operation=operation,
            title=(
                f"Unused eager load: {relationship} ({strategy}) in {operation} was never read; "
                f"{bound}{wasted_ms:.1f} ms wasted"
            ),
            fingerprint=fingerprint(TYPE, first.service, operation, relationship),
            trace_id=tree.trace_id_hex,
            offending=[node.span_id for node in queries],
            parent_span_id=first.parent_id,
            details=details,
            time_ns=tree.end_ns(),
            summary=f"{relationship} loaded eagerly, never read",
        )
