"""`otel-perf analyze`: the detectors over traces exported to files (OTLP JSON lines).

Spans are grouped by trace across all files, trees are analysed in order of trace end time, and
findings go through the same router as live traffic, with time taken from the spans, so a replay
of last week's export gives the alerts last week's traffic would have given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO

from otel_perf.alerting.alert import Alert
from otel_perf.alerting.router import AlertRouter
from otel_perf.processors import semconv
from otel_perf.processors.analysis import analyze_tree, build_detectors
from otel_perf.processors.errors import OtlpFormatError
from otel_perf.processors.findings import DiscardFindings, Finding, iso_time
from otel_perf.processors.monitors import Watcher, build_watcher
from otel_perf.processors.sources import read_json_lines
from otel_perf.processors.tree import (
    ENTRY_KINDS,
    FirstRequests,
    SpanNode,
    TraceTree,
    starts_request,
)
from otel_perf.settings import Settings

logger = logging.getLogger("otel_perf.offline")


def read_traces(
    streams: Iterable[IO[bytes]], on_error: Callable[[OtlpFormatError], None] | None = None
) -> dict[int, list[SpanNode]]:
    """Spans by trace from OTLP JSON lines files, read as bytes: a line that is not UTF-8 (binary
    input, a truncated write) is named and skipped like any other malformed line."""
    traces: dict[int, list[SpanNode]] = {}
    for stream in streams:
        for trace_id, node in read_json_lines(_text_lines(stream, on_error), on_error):
            traces.setdefault(trace_id, []).append(node)
    return traces


def _text_lines(stream: IO[bytes], on_error: Callable[[OtlpFormatError], None] | None) -> Iterator[str]:
    for number, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            error = OtlpFormatError(f"line {number}: not UTF-8 (binary input?)")
            if on_error is None:
                raise error from None
            on_error(error)
            yield ""  # keeps the line numbers of what follows


def analyze_traces(
    traces: dict[int, list[SpanNode]], settings: Settings, *, dedup: bool = True
) -> Iterator[Alert]:
    """Alerts in trace end-time order, the monitors' (trends, error rates) as their windows close;
    with `dedup`, routed (cooldown, rate limit) like live ones."""
    detectors = build_detectors(settings.detectors)
    # The replay's clock is the spans' time, within the bulk of the input (see `replay_bounds`).
    max_gap_ns = int(settings.monitor.history_days * 86400e9)
    ends = {trace_id: max((node.end_ns for node in nodes), default=0) for trace_id, nodes in traces.items()}
    low, high = replay_bounds(ends.values(), max_gap_ns)
    outside = {trace_id for trace_id, end in ends.items() if not low <= end <= high}
    if outside:
        logger.warning(
            "otel-perf: %d trace(s) dated far from the rest of the input (%s to %s; more than "
            "%g days away) were analysed, but not counted in trends, and alerted as of that span's edge",
            len(outside),
            iso_time(low),
            iso_time(high),
            settings.monitor.history_days,
        )
    router = AlertRouter(settings.router, replay=True, replay_bounds=(low, high))
    watched = _Collected()
    watcher = build_watcher(settings.monitor, settings.monitors, findings=watched, replay=True)
    first_requests = FirstRequests()
    for trace_id, nodes in traces.items():
        for node in nodes:
            if node.kind in ENTRY_KINDS and trace_id not in outside and node.start_ns >= low - max_gap_ns:
                first_requests.saw(node.service, node.start_ns)
    trees = sorted(
        (TraceTree(trace_id, nodes, first_requests) for trace_id, nodes in traces.items()),
        key=lambda tree: tree.end_ns(),
    )
    for tree in trees:
        findings = analyze_tree(tree, detectors, source="offline")
        if watcher is not None and tree.trace_id not in outside:
            _watch(watcher, tree)
            watcher.advance()
            findings.extend(watched.take())
        yield from _route(findings, router, dedup)
    if watcher is not None:
        watcher.finish()
        yield from _route(watched.take(), router, dedup)


def replay_bounds(times: Iterable[int], max_gap_ns: int, now_ns: int | None = None) -> tuple[int, int]:
    """The time a replay runs over: the run of `times` around their median with no gap longer than
    `max_gap_ns` (the monitors' history: older windows are forgotten anyway). A trace dated beyond
    it (2200, or 0, among last week's) is far outside the input's bulk: as the replay's clock, it
    would close every window at once and hold cooldowns and the hourly limit for ever. Times no
    export can carry (before 2000, or later than `now_ns` by over an hour) never make the bulk,
    however few the others are."""
    latest = (time.time_ns() if now_ns is None else now_ns) + _FUTURE_SLACK_NS
    every = sorted(times)
    ordered = [moment for moment in every if _EARLIEST_NS <= moment <= latest] or every
    if not ordered:
        return 0, 0
    first = last = len(ordered) // 2
    while first > 0 and ordered[first] - ordered[first - 1] <= max_gap_ns:
        first -= 1
    while last < len(ordered) - 1 and ordered[last + 1] - ordered[last] <= max_gap_ns:
        last += 1
    return ordered[first], ordered[last]


_EARLIEST_NS = 946_684_800 * 10**9  # 2000-01-01: earlier is an unset or broken clock
_FUTURE_SLACK_NS = 3600 * 10**9


def _watch(watcher: Watcher, tree: TraceTree) -> None:
    for node in tree.nodes.values():
        if (
            starts_request(node.parent_id is not None, node.kind)
            and node.span_id not in tree.placeholders
            and node.name != semconv.ALERT_SPAN_NAME
        ):
            watcher.record(
                node.service, node.name, node.service_version, node.end_ns, node.duration_ns, node.is_error
            )


def _route(findings: Iterable[Finding], router: AlertRouter, dedup: bool) -> Iterator[Alert]:
    for finding in findings:
        alert = router.decide(finding) if dedup else Alert(finding)
        if alert is not None:
            yield alert


class _Collected(DiscardFindings):
    """The monitors' findings, kept until the replay loop routes them in time order."""

    def __init__(self) -> None:
        self._findings: list[Finding] = []

    def submit(self, findings: Sequence[Finding]) -> None:
        self._findings.extend(findings)

    def take(self) -> list[Finding]:
        taken, self._findings = self._findings, []
        return taken
