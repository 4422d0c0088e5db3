"""N+1: the same query (or HTTP call) repeated sequentially under one parent, once per item of a loop.

Detected by structure, rated by impact. Siblings are grouped by a signature — the normalized
statement for database spans, the URL template for HTTP client spans — and a group of at least
`min_repeats` that ran one after another (not a parallel fan-out) is an N+1. A fast local SQLite
still shows the pattern (at low severity); the total time of the repeats and their share of the
parent's time decide how bad it is. Eager loading (one `IN (…)` query), a set of different
queries and short loops do not match.

Where the whole trace is visible (collector-side), HTTP calls whose URLs differ in a way the
template cannot see (slugs, names) are grouped by the route of the server span they reached, and
the queries each call caused downstream are reported with the loop: a cross-service N+1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors.config import ScopedSection
from otel_perf.processors.detectors.base import common_location, operation_of, short
from otel_perf.processors.detectors.calls import Signature, group_calls, overlaps, signature
from otel_perf.processors.findings import Finding, fingerprint, severity_by_thresholds
from otel_perf.processors.normalize import is_transaction_control, normalize_sql, url_template
from otel_perf.processors.tree import KIND_SERVER, SpanNode, TraceShape, TraceTree


class NPlusOneSettings(ScopedSection):
    """`OTEL_PERF_N_PLUS_ONE_*`"""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_N_PLUS_ONE_")

    enabled: bool = Field(True, description="Run this detector.")
    min_repeats: int = Field(5, ge=2, description="Repeats under one parent that make an N+1.")
    max_overlap: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of repeats that may overlap their predecessor and still count as sequential "
        "(more: a concurrent N+1, reported with details.concurrent).",
    )
    overlap_tolerance: float = Field(
        0.5,
        ge=0,
        le=1,
        description="An overlap shorter than this share of the shorter span is no overlap (clock skew, "
        "async drivers).",
    )
    medium_ms: float = Field(50, ge=0, description="Total time of the repeats from which severity is medium.")
    high_ms: float = Field(250, ge=0, description="… high.")
    critical_ms: float = Field(1000, ge=0, description="… critical.")
    min_share: float = Field(
        0.1, ge=0, le=1, description="Below this share of the parent's time, severity drops one level."
    )


def _route_signature(node: SpanNode) -> Signature | None:
    """For an HTTP client span whose server span is in the tree: the callee's route."""
    for child in node.children:
        if child.kind == KIND_SERVER and child.http_route:
            host = url_template(node.http_url or "").split("/", 3)
            prefix = "/".join(host[:3]) if len(host) >= 3 else ""
            return ("http", node.http_method or "GET", f"{prefix}{child.http_route}")
    return None


def is_sequential(members: list[SpanNode], max_overlap: float, tolerance: float = 0.0) -> bool:
    """True when the repeats ran one after another (a loop), not concurrently (a fan-out)."""
    overlapping = 0
    latest = members[0]
    latest_end = latest.end_ns
    for member in members[1:]:
        if overlaps(latest_end, member, latest, tolerance):
            overlapping += 1
        if member.end_ns >= latest_end:
            latest, latest_end = member, member.end_ns
    return overlapping <= max_overlap * (len(members) - 1)


_NOUNS = {"db": "queries", "http": "HTTP calls", "cache": "cache calls"}


class NPlusOneDetector:
    name: ClassVar[str] = "n_plus_one"

    def __init__(self, settings: NPlusOneSettings | None = None) -> None:
        self.settings = settings or NPlusOneSettings()
        self._min_repeats = self.settings.lowest("min_repeats")  # in any scope

    def could_match(self, shape: TraceShape) -> bool:
        # Repeats are CLIENT spans (queries, calls) under one parent.
        return shape.max_client_siblings >= self._min_repeats

    def detect(self, tree: TraceTree) -> Iterator[Finding]:
        min_repeats = self._min_repeats
        for parent in tree.walk():
            if len(parent.children) < min_repeats:
                continue
            groups = group_calls(parent.children)
            regrouped: dict[Signature, list[SpanNode]] = {}
            for key, members in groups.items():
                if len(members) >= min_repeats:
                    yield from self._finding(tree, parent, key, members)
                elif key[0] == "http":
                    for member in members:
                        route_key = _route_signature(member)
                        if route_key is not None:
                            regrouped.setdefault(route_key, []).append(member)
            for key, members in regrouped.items():
                if len(members) >= min_repeats:
                    members.sort(key=lambda node: node.start_ns)
                    yield from self._finding(tree, parent, key, members)

    def _finding(
        self, tree: TraceTree, parent: SpanNode, key: Signature, members: list[SpanNode]
    ) -> Iterator[Finding]:
        operation = operation_of(tree, parent)
        settings = self.settings.at(parent.service, operation)
        if len(members) < settings.min_repeats:
            return
        concurrent = not is_sequential(members, settings.max_overlap, settings.overlap_tolerance)
        kind = key[0]
        template = key[-1]
        durations = [member.duration_ns for member in members]
        total_ms = sum(durations) / 1e6
        # One batched call would cost about the longest of them: the rest is what it saves (for a
        # loop, request time; for a concurrent burst, round trips and work on the other side).
        saved_ms = total_ms - max(durations) / 1e6
        wall_ms = (max(member.end_ns for member in members) - members[0].start_ns) / 1e6
        parent_ms = parent.duration_ms
        share = min(1.0, (wall_ms if concurrent else total_ms) / parent_ms) if parent_ms > 0 else 1.0
        severity = severity_by_thresholds(
            saved_ms if concurrent else total_ms, settings.medium_ms, settings.high_ms, settings.critical_ms
        )
        if share < settings.min_share:
            severity = severity.lowered()
        first = members[0]
        details: dict[str, object] = {
            "kind": kind,
            "count": len(members),
            "concurrent": concurrent,
            "parent_span": parent.name,
            "total_duration_ms": round(total_ms, 3),
            "wall_ms": round(wall_ms, 3),
            "saved_ms": round(saved_ms, 3),
            "share_of_parent": round(share, 3),
        }
        if kind in ("db", "cache"):
            details["statement"] = template
            if first.db_system:
                details["db_system"] = first.db_system
            what = short(template, 70)
        else:
            details["method"] = key[1]
            details["url_template"] = template
            what = f"{key[1]} {short(template, 70)}"
            downstream = _downstream_statements(members)
            if downstream:
                details["downstream"] = downstream
        location = common_location(members)
        loader = _loading_query(parent, members) if kind == "db" else None
        if location:
            details["code_location"] = location
        elif loader is not None and loader.code_location is not None:
            # No application frame (lazy loads while FastAPI serialised the response, say): name the
            # query that loaded the objects, which is where the eager load belongs.
            details["code_location"] = {**loader.code_location, "role": "loaded the objects"}
        relationship = first.orm_lazy_load
        if relationship:
            details["orm_relationship"] = relationship
            if first.orm_direction:
                details["orm_direction"] = first.orm_direction
            details["suggestion"] = _eager_load_suggestion(relationship, first.orm_direction, loader)
        elif kind == "db":
            details["suggestion"] = (
                "fetch all rows in one query (WHERE … IN (…) or a JOIN) instead of one per item"
            )
        elif kind == "cache":
            details["suggestion"] = "read the keys in one round trip (MGET, get_many or a pipeline)"
        elif concurrent:
            details["suggestion"] = "call a batch endpoint once instead of one call per item"
        else:
            details["suggestion"] = "call a batch endpoint once, or run the calls concurrently"
        cause = f" ({relationship} lazy load)" if relationship else ""
        manner = "concurrent " if concurrent else ""
        title = f"N+1 {manner}{_NOUNS[kind]}: {len(members)}× {what} in {operation}{cause}"
        yield Finding(
            type=self.name,
            severity=severity,
            service=parent.service,
            operation=operation,
            title=title,
            fingerprint=fingerprint(self.name, parent.service, operation, *key),
            trace_id=tree.trace_id_hex,
            offending=[member.span_id for member in members],
            parent_span_id=parent.span_id,
            details=details,
            time_ns=tree.end_ns(),
            summary=what,
        )


def _loading_query(parent: SpanNode, members: list[SpanNode]) -> SpanNode | None:
    """The last other query under `parent` before the repeats began: the one that loaded the rows
    whose relationship is then loaded one by one."""
    first_start = members[0].start_ns
    template = signature(members[0])
    loader = None
    for sibling in parent.children:
        if sibling.start_ns >= first_start:
            break
        if sibling.statement is not None and signature(sibling) not in (None, template):
            loader = sibling
    return loader


# Clauses with which a joined eager load changes or breaks the query (it adds columns and rows).
_JOIN_UNSAFE = ("GROUP BY", "DISTINCT", "LIMIT", "UNION")


def _eager_load_suggestion(relationship: str, direction: str | None, loader: SpanNode | None) -> str:
    """`selectinload` always works; `joinedload` only fits a many-to-one (one row per item) on a
    query it can't break."""
    suggestion = f"eager-load it: .options(selectinload({relationship}))"
    loader_sql = (loader.statement or "").upper() if loader is not None else ""
    if direction == "many_to_one" and not any(clause in loader_sql for clause in _JOIN_UNSAFE):
        suggestion += f" or .options(joinedload({relationship})) (a many-to-one: one joined row per item)"
    return suggestion + " on the query that loads these objects"


def _downstream_statements(members: list[SpanNode]) -> list[dict[str, object]]:
    """Queries run beneath each repeated call (visible only in a whole cross-service trace)."""
    per_call: Counter[tuple[str, str]] = Counter()
    calls_with: Counter[tuple[str, str]] = Counter()
    for member in members:
        seen: Counter[tuple[str, str]] = Counter()
        stack = list(member.children)
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.statement is not None:
                template = normalize_sql(node.statement, node.db_system)
                if not is_transaction_control(template):
                    seen[(node.service, template)] += 1
        per_call.update(seen)
        calls_with.update(seen.keys())
    threshold = len(members) / 2
    return [
        {"service": service, "statement": template, "count": per_call[(service, template)]}
        for (service, template), calls in calls_with.most_common()
        if calls >= threshold
    ]
