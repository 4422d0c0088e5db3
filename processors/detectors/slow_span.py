"""Slow spans: a request, query or outgoing call that took longer than its threshold.

Thresholds come per span kind (the seeds: 100 ms for queries, 500 ms for APIs), overridable per
route, span name, statement, `db.system` or service (e.g. 2 s for `/analytics/*`, 500 ms for
`db.system:clickhouse`). Severity grows with how far the threshold was exceeded. A slow endpoint
names the child that dominated it, so the alert already points at the cause.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fnmatch import translate
from typing import Annotated, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from otel_perf.processors.config import ScopedSection, json_setting
from otel_perf.processors.detectors.base import operation_of, short
from otel_perf.processors.detectors.calls import is_echo, statement_template
from otel_perf.processors.findings import Finding, fingerprint, severity_by_thresholds
from otel_perf.processors.normalize import normalize_sql, url_template
from otel_perf.processors.tree import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_NAMES,
    KIND_SERVER,
    SpanNode,
    TraceShape,
    TraceTree,
)

OVERRIDE_FIELDS = ("route", "name", "statement", "db.system", "service")


class SlowSpanSettings(ScopedSection):
    """`OTEL_PERF_SLOW_SPAN_*`"""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_SLOW_SPAN_")
    unscoped: ClassVar[frozenset[str]] = frozenset({"overrides"})

    enabled: bool = Field(True, description="Run this detector.")
    server_ms: float = Field(500, gt=0, description="Server/consumer spans (API requests).")
    db_ms: float = Field(100, gt=0, description="Database spans.")
    http_client_ms: float = Field(1000, gt=0, description="Outgoing HTTP calls.")
    internal_ms: float = Field(0, ge=0, description="Internal spans; 0 turns the check off.")
    overrides: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description='JSON object, e.g. {"route:/analytics/*": 2000, "db.system:clickhouse": 500}; '
        "keys are <field>:<glob> with field one of route, name, statement, db.system, service.",
    )
    medium_ratio: float = Field(2, ge=1, description="Duration/threshold from which severity is medium.")
    high_ratio: float = Field(5, ge=1, description="… high.")
    critical_ratio: float = Field(10, ge=1, description="… critical.")

    _parse_overrides = field_validator("overrides", mode="before")(json_setting)

    @field_validator("overrides")
    @classmethod
    def _check_overrides(cls, value: dict[str, float]) -> dict[str, float]:
        for key, threshold in value.items():
            field, _, pattern = key.partition(":")
            if field not in OVERRIDE_FIELDS or not pattern:
                raise ValueError(
                    f"override key {key!r} must be <field>:<glob>, field one of {OVERRIDE_FIELDS}"
                )
            if threshold <= 0:
                raise ValueError(f"override {key!r} must be a positive number of milliseconds")
        return value


class SlowSpanDetector:
    name: ClassVar[str] = "slow_span"

    def __init__(self, settings: SlowSpanSettings | None = None) -> None:
        self.settings = settings or SlowSpanSettings()
        # Most specific first: a route or name beats a statement, which beats db.system, then service.
        order = {field: rank for rank, field in enumerate(OVERRIDE_FIELDS)}
        self._overrides = sorted(
            (
                (order[field], field, re.compile(translate(pattern)), threshold)
                for key, threshold in self.settings.overrides.items()
                for field, _, pattern in [key.partition(":")]
            ),
            key=lambda item: item[0],
        )
        settings = self.settings
        thresholds = [
            settings.lowest("server_ms"),
            settings.lowest("db_ms"),
            settings.lowest("http_client_ms"),
            *settings.overrides.values(),
        ]
        internal = [settings.internal_ms] + [
            scope.get("internal_ms", 0) for scope in settings.scopes.values()
        ]
        thresholds.extend(value for value in internal if value > 0)
        self._lowest_threshold_ns = min(thresholds) * 1e6  # in any scope

    def could_match(self, shape: TraceShape) -> bool:
        return shape.max_duration_ns > self._lowest_threshold_ns

    def threshold_ms(self, node: SpanNode, settings: SlowSpanSettings | None = None) -> float | None:
        """The threshold that applies to `node` (under `settings`, those of its operation), or None
        when it is not checked."""
        for _, field, pattern, threshold in self._overrides:
            value = _field_value(node, field)
            if value is not None and pattern.match(value):
                return threshold
        settings = settings or self.settings
        if node.is_db:
            return settings.db_ms
        if node.kind in (KIND_SERVER, KIND_CONSUMER):
            return settings.server_ms
        if node.kind == KIND_CLIENT and node.http_url is not None:
            return settings.http_client_ms
        if node.kind == KIND_INTERNAL and settings.internal_ms > 0:
            return settings.internal_ms
        return None

    def detect(self, tree: TraceTree) -> Iterator[Finding]:
        lowest = self._lowest_threshold_ns
        for node in tree.walk():
            if node.end_ns - node.start_ns <= lowest:
                continue  # under every threshold: no need to read its attributes
            if node.is_connection_checkout:
                continue  # a wait for a connection, not a slow query: the pool detector's
            operation = operation_of(tree, node)
            settings = self.settings.at(node.service, operation)
            threshold = self.threshold_ms(node, settings)
            if threshold is None:
                continue
            duration = node.duration_ms
            if duration <= threshold or (node.kind == KIND_CLIENT and is_echo(node)):
                continue
            yield self._finding(tree, node, operation, settings, duration, threshold)

    def _finding(
        self,
        tree: TraceTree,
        node: SpanNode,
        operation: str,
        settings: SlowSpanSettings,
        duration: float,
        threshold: float,
    ) -> Finding:
        ratio = duration / threshold
        severity = severity_by_thresholds(
            ratio, settings.medium_ratio, settings.high_ratio, settings.critical_ratio
        )
        details: dict[str, object] = {
            # Some instrumentations name DB spans after the statement: never a literal in an alert.
            "span_name": normalize_sql(node.name, node.db_system) if node.is_db else node.name,
            "span_kind": KIND_NAMES.get(node.kind, "unspecified"),
            "duration_ms": round(duration, 3),
            "threshold_ms": threshold,
            "ratio": round(ratio, 2),
        }
        if node.statement is not None:
            what_key = statement_template(node)
            details["statement"] = what_key
            what = f"query {short(what_key, 70)}"
        elif node.kind == KIND_CLIENT and node.http_url is not None:
            what_key = url_template(node.http_url)
            details["url_template"] = what_key
            what = f"call {node.http_method or ''} {short(what_key, 70)}".replace("  ", " ")
        else:
            what_key = node.http_route or node.name
            what = "request" if node.kind in (KIND_SERVER, KIND_CONSUMER) else f"span {short(node.name, 60)}"
        if node.db_system:
            details["db_system"] = node.db_system
        if node.http_route:
            details["route"] = node.http_route
        if node.code_location:
            details["code_location"] = node.code_location
        dominant = _dominant_child(node)
        if dominant is not None:
            details["dominant_child"] = dominant
        return Finding(
            type=self.name,
            severity=severity,
            service=node.service,
            operation=operation,
            title=f"Slow {what}: {duration:.0f} ms (threshold {threshold:.0f} ms) in {operation}",
            fingerprint=fingerprint(self.name, node.service, operation, node.kind, what_key),
            trace_id=tree.trace_id_hex,
            offending=[node.span_id],
            parent_span_id=node.parent_id,
            details=details,
            time_ns=tree.end_ns(),
            summary=f"slow {what}",
        )


def _field_value(node: SpanNode, field: str) -> str | None:
    if field == "route":
        return node.http_route
    if field == "name":
        return node.name
    if field == "statement":
        return statement_template(node) if node.statement is not None else None
    if field == "db.system":
        return node.db_system
    return node.service


def _dominant_child(node: SpanNode) -> dict[str, object] | None:
    """The child that took at least half of a slow span's time, named without literals. A mounted
    sub-application's span (see `tree.mounted_route`) only wraps the request: looked through."""
    if not node.children or node.duration_ns <= 0:
        return None
    child = max(node.children, key=lambda each: each.duration_ns)
    while child.kind == KIND_INTERNAL and child.http_route and child.children:
        child = max(child.children, key=lambda each: each.duration_ns)
    share = child.duration_ns / node.duration_ns
    if share < 0.5:
        return None
    if child.statement is not None:
        label = statement_template(child)
    else:
        label = normalize_sql(child.name, child.db_system) if child.is_db else child.name
    return {
        "span_name": short(label, 120),
        "duration_ms": round(child.duration_ms, 3),
        "share": round(share, 3),
    }
