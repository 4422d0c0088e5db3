"""What detectors produce: a `Finding`, the unit the alert router deduplicates and sinks deliver.

Its JSON form is the alert contract in DESIGN.md: `type`, `severity`, `service`, `operation`,
`trace_id`, `span_ids`, `fingerprint`, `title`, `details` (plus `time`), and is extended, never renamed.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

MAX_SPAN_IDS = 50

# `details.status` of the monitors' findings (trends, error rates): a regression fires once and
# resolves once, under one fingerprint.
FIRING = "firing"
RESOLVED = "resolved"


class Severity(enum.IntEnum):
    """The seeds' four levels; ordered, so `max()` and comparisons work."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {value!r}: use low, medium, high or critical") from None

    def lowered(self, steps: int = 1) -> Severity:
        return Severity(max(Severity.LOW, self - steps))


# Part of every fingerprint: a change of what goes into one (the parts, the normaliser's templates)
# is a new version, so an old fingerprint is never silently matched against a new recipe.
FINGERPRINT_VERSION = 1


def fingerprint(*parts: object) -> str:
    """Stable across processes, hosts and restarts: a hash of what makes two findings the same issue,
    behind the recipe's version (`1-3f9a…`)."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).hexdigest()
    return f"{FINGERPRINT_VERSION}-{digest[:16]}"


def severity_by_thresholds(value: float, medium: float, high: float, critical: float) -> Severity:
    """The level whose lower bound `value` reached (below `medium` is low)."""
    if value >= critical:
        return Severity.CRITICAL
    if value >= high:
        return Severity.HIGH
    if value >= medium:
        return Severity.MEDIUM
    return Severity.LOW


@dataclass
class Finding:
    type: str
    severity: Severity
    service: str
    operation: str
    title: str
    fingerprint: str
    trace_id: str | None = None
    # The spans by role: the offending ones (the repeats, the slow span; annotated with
    # `perf.issue`, `span_ids` in the JSON), the span they ran under, and the trace's root (under
    # which the alert span is created).
    offending: list[int] = field(default_factory=list)
    parent_span_id: int | None = None
    root_span_id: int | None = field(default=None, repr=False)
    details: dict[str, Any] = field(default_factory=dict)
    time_ns: int = 0
    source: str = "in_process"
    # A stable short description (no counts or durations): what Alertmanager groups by.
    summary: str = ""

    @property
    def resolved(self) -> bool:
        """Whether this finding says that an earlier one (same fingerprint) is over."""
        return self.details.get("status") == RESOLVED

    @property
    def span_ids(self) -> list[str]:
        """The offending spans' ids as in OTLP/JSON and Jaeger (16 hex characters)."""
        return [f"{span_id:016x}" for span_id in self.offending]

    @property
    def alert_name(self) -> str:
        """Distinct per finding, equal across its repeats: type, operation, short description."""
        summary = self.summary or self.title
        if len(summary) > 100:
            summary = summary[:99] + "…"
        short_hash = self.fingerprint.rpartition("-")[2][:8]
        return f"{self.type} {self.operation}: {summary} #{short_hash}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.type,
            "severity": self.severity.label,
            "service": self.service,
            "operation": self.operation,
            "trace_id": self.trace_id,
            "span_ids": self.span_ids[:MAX_SPAN_IDS],
            "fingerprint": self.fingerprint,
            "title": self.title,
            "details": self.details,
            "source": self.source,
        }
        if self.time_ns:
            data["time"] = iso_time(self.time_ns)
        return data


def iso_time(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).isoformat(timespec="milliseconds")


class FindingsHandler(Protocol):
    """Where a host hands the findings of each analysed trace: in otel-perf, the alert router.
    `submit` must not block (it runs on the analysis worker)."""

    def submit(self, findings: Sequence[Finding]) -> None: ...

    def flush(self, timeout_s: float = 10.0) -> bool: ...

    def shutdown(self, timeout_s: float = 5.0) -> None: ...


class DiscardFindings:
    """A handler that keeps nothing: hosts that only annotate spans, and the fallback when no
    default handler was registered."""

    def submit(self, findings: Sequence[Finding]) -> None:
        pass

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def shutdown(self, timeout_s: float = 5.0) -> None:
        pass


# The analysis core knows nothing of alerting: the application layer above it (the `otel_perf`
# package, imported before any of its subpackages) registers how to build the default handler.
_default_handler_factory: Callable[[], FindingsHandler] | None = None


def register_default_handler(factory: Callable[[], FindingsHandler]) -> None:
    global _default_handler_factory
    _default_handler_factory = factory


def default_handler() -> FindingsHandler:
    """The registered default (alerts routed to the `OTEL_PERF_ALERTS_*` sinks), else one that discards."""
    if _default_handler_factory is None:
        logging.getLogger("otel_perf.analysis").warning(
            "otel-perf: no findings handler registered; findings are discarded"
        )
        return DiscardFindings()
    return _default_handler_factory()
