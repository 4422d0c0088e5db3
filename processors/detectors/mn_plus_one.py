"""MN+1: a sequence of different calls repeated once per item, such as a GraphQL resolver running
three queries for each of ten items, or a loop making an HTTP call and a query per item.

Each call of the sequence taken alone may repeat too few times for an N+1, or be reported as
several N+1s that hide the one loop behind them. Under one parent, the calls (in start order,
echoes left out) are scanned for the shortest run of 2 to `max_length` signatures, at least two of
them different, that repeats back to back at least `min_repeats` times; the whole sequence is
reported once, and supersedes the N+1s of its members.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors.config import ScopedSection
from otel_perf.processors.detectors.base import common_location, operation_of, short
from otel_perf.processors.detectors.calls import Signature, calls_among, describe
from otel_perf.processors.findings import Finding, fingerprint, severity_by_thresholds
from otel_perf.processors.tree import SpanNode, TraceShape, TraceTree

TYPE = "mn_plus_one"


class MNPlusOneSettings(ScopedSection):
    """`OTEL_PERF_MN_PLUS_ONE_*`"""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_MN_PLUS_ONE_")
    unscoped: ClassVar[frozenset[str]] = frozenset({"max_length"})

    enabled: bool = Field(True, description="Run this detector.")
    min_repeats: int = Field(3, ge=2, description="Back-to-back repeats of a sequence that make an MN+1.")
    max_length: int = Field(8, ge=2, le=32, description="Longest sequence of calls looked for.")
    min_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="The repeats' share of the parent's call time below which it is ignored.",
    )
    medium_ms: float = Field(50, ge=0, description="Total time of the repeats from which severity is medium.")
    high_ms: float = Field(250, ge=0, description="… high.")
    critical_ms: float = Field(1000, ge=0, description="… critical.")


@dataclass(frozen=True)
class Repetition:
    """`pattern` repeated `repeats` times back to back, starting at call `start`."""

    start: int
    pattern: tuple[Signature, ...]
    repeats: int

    @property
    def length(self) -> int:
        return len(self.pattern) * self.repeats


def repetitions(keys: list[Signature], min_repeats: int, max_length: int) -> Iterator[Repetition]:
    """Each maximal back-to-back repetition of a sequence of 2 to `max_length` signatures (at least two
    different), left to right, the shortest sequence winning a tie (ABAB is AB twice, not ABAB
    once). Hand-written: at most `max_length` comparisons per call, so linear in practice."""
    count = len(keys)
    # run_end[i]: where the run of keys equal to keys[i] ends (a pattern inside one run is an N+1's).
    run_end = [count] * count
    for index in range(count - 2, -1, -1):
        run_end[index] = run_end[index + 1] if keys[index] == keys[index + 1] else index + 1
    position = 0
    while position < count:
        best: Repetition | None = None
        for period in range(max(2, run_end[position] - position + 1), max_length + 1):
            if position + period * min_repeats > count:
                break
            if keys[position] != keys[position + period]:
                continue  # the cheap test first: most positions start no repetition
            pattern = tuple(keys[position : position + period])
            repeats = 1
            while tuple(keys[position + repeats * period : position + (repeats + 1) * period]) == pattern:
                repeats += 1
            if repeats >= min_repeats and (best is None or repeats * period > best.length):
                best = Repetition(position, pattern, repeats)
        if best is None:
            position += 1
        else:
            yield best
            position += best.length


class MNPlusOneDetector:
    name: ClassVar[str] = TYPE
    supersedes: ClassVar[frozenset[str]] = frozenset({"n_plus_one", "consecutive_calls"})

    def __init__(self, settings: MNPlusOneSettings | None = None) -> None:
        self.settings = settings or MNPlusOneSettings()
        self._min_repeats = int(self.settings.lowest("min_repeats"))  # in any scope
        self._min_calls = 2 * self._min_repeats

    def could_match(self, shape: TraceShape) -> bool:
        return shape.max_client_siblings >= self._min_calls

    def detect(self, tree: TraceTree) -> Iterator[Finding]:
        settings = self.settings
        for parent in tree.walk():
            if len(parent.children) < self._min_calls:
                continue
            calls = calls_among(parent.children)
            if len(calls) < self._min_calls:
                continue
            keys = [key for _, key in calls]
            call_ns = sum(node.duration_ns for node, _ in calls)
            for repetition in repetitions(keys, self._min_repeats, settings.max_length):
                members = [node for node, _ in calls[repetition.start : repetition.start + repetition.length]]
                total_ns = sum(node.duration_ns for node in members)
                operation = operation_of(tree, parent)
                scoped = settings.at(parent.service, operation)
                if repetition.repeats < scoped.min_repeats or (
                    call_ns and total_ns / call_ns < scoped.min_share
                ):
                    continue
                yield self._finding(tree, parent, operation, scoped, repetition, members, total_ns / 1e6)

    def _finding(
        self,
        tree: TraceTree,
        parent: SpanNode,
        operation: str,
        settings: MNPlusOneSettings,
        repetition: Repetition,
        members: list[SpanNode],
        total_ms: float,
    ) -> Finding:
        pattern = [describe(key) for key in repetition.pattern]
        size = len(pattern)
        shown = ", ".join(short(each, 40) for each in pattern[:3]) + (", …" if size > 3 else "")
        parent_ms = parent.duration_ms
        details: dict[str, object] = {
            "repeats": repetition.repeats,
            "pattern": pattern,
            "kinds": sorted({key[0] for key in repetition.pattern}),
            "count": len(members),
            "parent_span": parent.name,
            "total_duration_ms": round(total_ms, 3),
            "share_of_parent": round(min(1.0, total_ms / parent_ms), 3) if parent_ms > 0 else 1.0,
            "suggestion": "load what every item needs at once, one query or call per kind for all items "
            "(WHERE … IN (…), selectinload, a batch endpoint; a DataLoader for GraphQL resolvers), "
            "instead of one set of calls per item",
        }
        location = common_location(members)
        if location:
            details["code_location"] = location
        return Finding(
            type=TYPE,
            severity=severity_by_thresholds(
                total_ms, settings.medium_ms, settings.high_ms, settings.critical_ms
            ),
            service=parent.service,
            operation=operation,
            title=f"MN+1: {repetition.repeats}× a sequence of {size} calls ({shown}) in {operation}",
            fingerprint=fingerprint(
                TYPE, parent.service, operation, *(part for key in repetition.pattern for part in key)
            ),
            trace_id=tree.trace_id_hex,
            offending=[member.span_id for member in members],
            parent_span_id=parent.span_id,
            details=details,
            time_ns=tree.end_ns(),
            summary=f"{size} calls per item: {shown}",
        )
