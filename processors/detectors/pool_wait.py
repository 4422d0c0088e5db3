"""Pool exhaustion: a request waited for a database connection.

SQLAlchemy's instrumentation wraps `Engine.connect` in a `connect` span, so its duration is the
time the request waited for the pool (plus, for a new connection, the handshake). A wait over
`min_wait_ms` means the pool was exhausted (or the database slow to accept); a `connect` that ended
in an error after such a wait is a checkout that timed out (SQLAlchemy's `QueuePool limit … reached,
connection timed out`). One finding per trace: the longest wait, and how many checkouts waited.
A checkout during which the pool opened a new connection (`perf.db.new_connection`, marked
in-process from SQLAlchemy's pool events) spent its time on the database's handshake, not waiting:
it is not counted. (Behind the collector, spans of an app that does not analyse in-process carry no
such mark.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors import semconv
from otel_perf.processors.config import ScopedSection
from otel_perf.processors.detectors.base import operation_of
from otel_perf.processors.findings import Finding, Severity, fingerprint
from otel_perf.processors.tree import TraceShape, TraceTree

TYPE = "pool_exhaustion"


class PoolWaitSettings(ScopedSection):
    """`OTEL_PERF_POOL_WAIT_*`"""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_POOL_WAIT_")
    ascending: ClassVar[tuple[tuple[str, ...], ...]] = (("min_wait_ms", "high_ms"),)

    enabled: bool = Field(True, description="Report requests that waited for a database connection.")
    min_wait_ms: float = Field(
        200, gt=0, description="A checkout (SQLAlchemy `connect` span) longer than this waited for the pool."
    )
    high_ms: float = Field(1000, gt=0, description="…high from this wait; critical when it timed out.")


class PoolWaitDetector:
    name: ClassVar[str] = TYPE

    def __init__(self, settings: PoolWaitSettings | None = None) -> None:
        self.settings = settings or PoolWaitSettings()
        self._min_wait_ns = self.settings.lowest("min_wait_ms") * 1e6  # in any scope

    def could_match(self, shape: TraceShape) -> bool:
        return shape.max_duration_ns > self._min_wait_ns

    def detect(self, tree: TraceTree) -> Iterator[Finding]:
        waits = [
            node
            for node in tree.walk()
            if node.end_ns - node.start_ns > self._min_wait_ns
            and node.is_connection_checkout
            # Opening a new connection (a fresh pool, a far database) is a handshake, not a wait.
            and not node.attributes.get(semconv.PERF_DB_NEW_CONNECTION)
        ]
        if not waits:
            return
        longest = max(waits, key=lambda node: node.duration_ns)
        operation = operation_of(tree, longest)
        settings = self.settings.at(longest.service, operation)
        waits = [node for node in waits if node.duration_ms > settings.min_wait_ms]
        if not waits:
            return
        timed_out = any(node.is_error for node in waits)
        wait_ms = longest.duration_ms
        if timed_out:
            severity = Severity.CRITICAL
        elif wait_ms >= settings.high_ms:
            severity = Severity.HIGH
        else:
            severity = Severity.MEDIUM
        what = "timed out waiting" if timed_out else f"waited {wait_ms:.0f} ms"
        yield Finding(
            type=TYPE,
            severity=severity,
            service=longest.service,
            operation=operation,
            title=f"{operation} {what} for a {longest.db_system} connection: the pool is exhausted",
            fingerprint=fingerprint(TYPE, longest.service, operation, longest.db_system),
            trace_id=tree.trace_id_hex,
            offending=[node.span_id for node in waits],
            parent_span_id=longest.parent_id,
            details={
                "wait_ms": round(wait_ms, 1),
                "checkouts_waited": len(waits),
                "timed_out": timed_out,
                "db_system": longest.db_system,
                "threshold_ms": settings.min_wait_ms,
                "suggestion": "raise pool_size/max_overflow, or hold connections for less time "
                "(no slow work inside a session)",
            },
            time_ns=tree.end_ns(),
            summary="pool exhaustion",
        )
