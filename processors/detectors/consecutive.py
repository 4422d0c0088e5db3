"""Consecutive independent calls: queries or HTTP calls made one after another that could have
run at the same time, such as a dashboard's three unrelated aggregates.

Under one parent, the calls (echoes left out) form runs: each starts after the previous one ended
(give or take the N+1 detector's overlap tolerance), less than `max_gap_ms` later. In a run, a
call is independent when nothing it sends can come from an earlier one's result: a SELECT whose
statement has no bound parameter (literals are fine; LIMIT/OFFSET parameters are too), or a GET
or HEAD request. Run concurrently, the run would take as long as the longest independent call or
the dependent ones in turn, whichever is longer; a run is reported when that saves at least
`min_saved_ms` and `min_share` of the request. Repeats of one call are the N+1 detector's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from otel_perf.processors.config import ScopedSection
from otel_perf.processors.detectors.base import common_location, operation_of, short
from otel_perf.processors.detectors.calls import Signature, calls_among, describe, overlaps
from otel_perf.processors.findings import Finding, Severity, fingerprint
from otel_perf.processors.tree import SpanNode, TraceShape, TraceTree

TYPE = "consecutive_calls"

# Quoted strings and identifiers: a `?` or `:name` inside them is text, not a parameter.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\$(\w*)\$.*?\$\1\$", re.S)
# Page bounds are parameters that never come from another query's result.
_PAGE_BOUNDS = re.compile(r"\b(?:LIMIT|OFFSET|FETCH\s+(?:FIRST|NEXT)|TOP)\s*\(?\s*(?:\?|%s|\$\d+|:\w+)", re.I)
# DB-API and driver parameter markers: qmark, format, pyformat, numeric ($1, :1), named.
_PARAMETER = re.compile(r"\?|%s|%\(\w+\)s|\$\d+|(?<![:\w]):\w+")
_READ = re.compile(r"\s*(?:\(\s*)*(?:SELECT|WITH)\b", re.I)
_SAFE_METHODS = frozenset(("GET", "HEAD"))


def is_independent(node: SpanNode, key: Signature) -> bool:
    """Whether a call cannot depend on an earlier call's result (see the module docstring)."""
    if key[0] == "http":
        return key[1].upper() in _SAFE_METHODS
    if key[0] != "db" or node.statement is None or not _READ.match(node.statement):
        return False
    text = _PAGE_BOUNDS.sub(" ", _QUOTED.sub(" ", node.statement))
    return _PARAMETER.search(text) is None


class ConsecutiveCallsSettings(ScopedSection):
    """`OTEL_PERF_CONSECUTIVE_CALLS_*`"""

    model_config = SettingsConfigDict(env_prefix="OTEL_PERF_CONSECUTIVE_CALLS_")
    ascending: ClassVar[tuple[tuple[str, ...], ...]] = (("min_saved_ms", "high_ms"),)
    unscoped: ClassVar[frozenset[str]] = frozenset({"max_gap_ms", "overlap_tolerance"})

    enabled: bool = Field(True, description="Run this detector.")
    min_saved_ms: float = Field(
        100, ge=0, description="Time running the independent calls concurrently must save to be reported."
    )
    min_share: float = Field(0.1, ge=0, le=1, description="… and its share of the request's time.")
    max_gap_ms: float = Field(
        50, ge=0, description="A longer pause between two calls ends a run (the app worked on a result)."
    )
    overlap_tolerance: float = Field(
        0.5, ge=0, le=1, description="An overlap shorter than this share of the shorter call is none."
    )
    high_ms: float = Field(1000, ge=0, description="Time saved from which severity is high (else medium).")


class ConsecutiveCallsDetector:
    name: ClassVar[str] = TYPE

    def __init__(self, settings: ConsecutiveCallsSettings | None = None) -> None:
        self.settings = settings or ConsecutiveCallsSettings()
        self._min_saved_ns = self.settings.lowest("min_saved_ms") * 1e6  # in any scope
        self._max_gap_ns = self.settings.max_gap_ms * 1e6

    def could_match(self, shape: TraceShape) -> bool:
        return shape.max_client_siblings >= 2 and shape.max_duration_ns > self._min_saved_ns

    def detect(self, tree: TraceTree) -> Iterator[Finding]:
        for parent in tree.walk():
            if len(parent.children) < 2 or parent.duration_ns <= self._min_saved_ns:
                continue
            for run in self._runs(calls_among(parent.children)):
                finding = self._judge(tree, parent, run)
                if finding is not None:
                    yield finding

    def _runs(self, calls: list[tuple[SpanNode, Signature]]) -> Iterator[list[tuple[SpanNode, Signature]]]:
        """Maximal runs of calls each starting after the previous one ended, without a long pause."""
        tolerance = self.settings.overlap_tolerance
        run: list[tuple[SpanNode, Signature]] = []
        for call in calls:
            if run:
                previous = run[-1][0]
                node = call[0]
                if (
                    overlaps(previous.end_ns, node, previous, tolerance)
                    or node.start_ns - previous.end_ns > self._max_gap_ns
                ):
                    if len(run) >= 2:
                        yield run
                    run = []
            run.append(call)
        if len(run) >= 2:
            yield run

    def _judge(
        self, tree: TraceTree, parent: SpanNode, run: list[tuple[SpanNode, Signature]]
    ) -> Finding | None:
        independent: dict[Signature, SpanNode] = {}
        dependent_ns = 0
        for node, key in run:
            # A second call of one signature is a repeat (the N+1 detector's), so it runs in turn.
            if key not in independent and is_independent(node, key):
                independent[key] = node
            else:
                dependent_ns += node.duration_ns
        if len(independent) < 2:
            return None
        wall_ns = run[-1][0].end_ns - run[0][0].start_ns
        longest_ns = max(node.duration_ns for node in independent.values())
        saved_ns = wall_ns - max(longest_ns, dependent_ns)
        if saved_ns < self._min_saved_ns:
            return None
        operation = operation_of(tree, parent)
        settings = self.settings.at(parent.service, operation)
        request_ns = tree.entry_span(parent).duration_ns or wall_ns
        if saved_ns < settings.min_saved_ms * 1e6 or saved_ns < settings.min_share * request_ns:
            return None
        members = list(independent.values())
        kinds = {key[0] for key in independent}
        kind = kinds.pop() if len(kinds) == 1 else "mixed"
        calls = [describe(key) for key in independent]
        saved_ms = saved_ns / 1e6
        shown = ", ".join(short(each, 40) for each in calls[:3]) + (", …" if len(calls) > 3 else "")
        noun = {"db": "queries", "http": "HTTP calls"}.get(kind, "calls")
        details: dict[str, object] = {
            "kind": kind,
            "count": len(members),
            "calls": calls,
            "parent_span": parent.name,
            "duration_ms": round(wall_ns / 1e6, 3),
            "saved_ms": round(saved_ms, 3),
            "share_of_request": round(min(1.0, saved_ns / request_ns), 3),
            "suggestion": "run them concurrently (asyncio.gather with a session or client per call, or a "
            "thread pool), or fetch them in one query",
        }
        location = common_location(members)
        if location:
            details["code_location"] = location
        return Finding(
            type=TYPE,
            severity=Severity.HIGH if saved_ms >= settings.high_ms else Severity.MEDIUM,
            service=parent.service,
            operation=operation,
            title=f"{len(members)} independent {noun} one after another ({shown}) in {operation}: "
            f"{saved_ms:.0f} ms to save by running them concurrently",
            fingerprint=fingerprint(
                TYPE, parent.service, operation, *(part for key in independent for part in key)
            ),
            trace_id=tree.trace_id_hex,
            offending=[member.span_id for member in members],
            parent_span_id=parent.span_id,
            details=details,
            time_ns=tree.end_ns(),
            summary=f"{len(members)} independent {noun} in a row",
        )
