"""`otel-perf analyze`: the detectors over traces exported to files (OTLP JSON lines).

Spans are grouped by trace across all files, trees are analysed in order of trace end time, and
findings go through the same router as live traffic, with time taken from the spans, so a replay
of last week's export gives the alerts last week's traffic would have given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO

from otel_perf.alerting.alert import Alert
from otel_perf.alerting.router import AlertRouter
from otel_perf.processors.analysis import analyze_tree, build_detectors
from otel_perf.processors.errors import OtlpFormatError
from otel_perf.processors.sources import read_json_lines
from otel_perf.processors.tree import SpanNode, TraceTree
from otel_perf.settings import Settings


def read_traces(
    streams: Iterable[IO[str]], on_error: Callable[[OtlpFormatError], None] | None = None
) -> dict[int, list[SpanNode]]:
    traces: dict[int, list[SpanNode]] = {}
    for stream in streams:
        for trace_id, node in read_json_lines(stream, on_error):
            traces.setdefault(trace_id, []).append(node)
    return traces


def analyze_traces(
    traces: dict[int, list[SpanNode]], settings: Settings, *, dedup: bool = True
) -> Iterator[Alert]:
    """Alerts in trace end-time order; with `dedup`, routed (cooldown, rate limit) like live ones."""
    detectors = build_detectors(settings.detectors)
    router = AlertRouter(settings.router, replay=True)
    trees = sorted(
        (TraceTree(trace_id, nodes) for trace_id, nodes in traces.items()), key=lambda tree: tree.end_ns()
    )
    for tree in trees:
        for finding in analyze_tree(tree, detectors, source="offline"):
            alert = router.decide(finding) if dedup else Alert(finding)
            if alert is not None:
                yield alert
