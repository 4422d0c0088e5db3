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
