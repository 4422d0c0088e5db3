"""Requests from the collector's spanmetrics connector: its duration histograms, turned back into
per-window latency sketches and failure counts for the trend and error-rate monitors.

Why the analyzer prefers them to the spans it receives: spanmetrics count every span before tail
sampling (traffic sampled away still counts), and the gateway routes them by service, so exactly
one analyzer replica watches a service: one regression, one alert, however many replicas there are.

The connector's histograms are cumulative by default: each stream's first report is its baseline,
and every later one contributes the difference (a reset, e.g. a collector restart, starts the stream
again). Bucket counts are spread over their bucket on a log scale, so a quantile moves smoothly as
requests shift between buckets.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

DURATION_METRIC = "traces.span.metrics.duration"
_ENTRY_KINDS = frozenset({"SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER", "SERVER", "CONSUMER"})
_ERROR_CODES = frozenset({"STATUS_CODE_ERROR", "Error", "ERROR"})
_DELTA = 1  # AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_SPREAD = 4  # points per bucket
# Cumulative streams remembered; the least recently reported is forgotten first (its next point is
# a new baseline). Far above a real deployment's routes by services by versions.
MAX_STREAMS = 100_000
_MAX_COUNT = 2**53  # requests in one report: far beyond any real one, still exact as a float


@dataclass(frozen=True)
class Requests:
    """Requests of one operation seen in one report: their durations as (ms, count) points."""

    service: str
    operation: str
    version: str | None
    time_ns: int
    failed: bool
    durations: list[tuple[float, int]]

    @property
    def count(self) -> int:
        return sum(count for _, count in self.durations)


class SpanMetricsReader:
    """Remembers each cumulative stream's last report; yields what is new since. Thread-safe (the
    analyzer's receivers call it concurrently)."""

    def __init__(self) -> None:
        self._last: dict[tuple[Any, ...], tuple[int, list[int]]] = {}
        self._lock = threading.Lock()

    def requests(self, request: Any) -> list[Requests]:
        with self._lock:
            return self._requests(request)

    def _requests(self, request: Any) -> list[Requests]:
        found: list[Requests] = []
        for resource_metrics in request.resource_metrics:
            resource = {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name != DURATION_METRIC or not metric.HasField("histogram"):
                        continue
                    scale = 1000.0 if metric.unit == "s" else 1.0
                    delta = metric.histogram.aggregation_temporality == _DELTA
                    for point in metric.histogram.data_points:
                        taken = self._point(resource, point, scale, delta)
                        if taken is not None:
                            found.append(taken)
        return found

    def _point(self, resource: dict[str, str], point: Any, scale: float, delta: bool) -> Requests | None:
        labels = {kv.key: kv.value.string_value for kv in point.attributes}
        if labels.get("span.kind") not in _ENTRY_KINDS:
            return None
        counts = list(point.bucket_counts)
        if not delta:
            stream = (tuple(sorted(resource.items())), tuple(sorted(labels.items())))
            previous = self._last.pop(stream, None)  # re-inserted: the dict's order is recency
            self._last[stream] = (point.start_time_unix_nano, counts)
            if len(self._last) > MAX_STREAMS:  # labels a sender invents can't grow it for ever
                del self._last[next(iter(self._last))]
            if previous is None:
                return None  # the baseline: what came before we were listening is not news
            start, before = previous
            if start == point.start_time_unix_nano and len(before) == len(counts):
                counts = [now - then for now, then in zip(counts, before, strict=True)]
            if any(count < 0 for count in counts):
                return None  # a reset without a new start time: start the stream again
        if sum(counts) > _MAX_COUNT:
            return None  # no real count: alerts would carry it as an attribute OTLP can't encode
        bounds = [bound * scale for bound in point.explicit_bounds]
        # No duration histogram: a negative bound made complex numbers, an infinite one an overflow,
        # in the watcher's thread (its sketches can hold neither).
        if not all(math.isfinite(bound) and bound >= 0 for bound in bounds):
            return None
        durations = _spread(bounds, counts)
        if not durations:
            return None
        return Requests(
            service=labels.get("service.name") or resource.get("service.name") or "unknown_service",
            operation=labels.get("span.name", ""),
            version=resource.get("service.version") or labels.get("service.version") or None,
            time_ns=point.time_unix_nano,
            failed=labels.get("status.code") in _ERROR_CODES,
            durations=durations,
        )


def _spread(bounds: list[float], counts: list[int]) -> list[tuple[float, int]]:
    """(value, count) points: each bucket's count split over `_SPREAD` log-spaced values inside it."""
    points: list[tuple[float, int]] = []
    for index, count in enumerate(counts):
        if count <= 0:
            continue
        upper = bounds[index] if index < len(bounds) else (bounds[-1] * 2 if bounds else 1.0)
        lower = bounds[index - 1] if 0 < index <= len(bounds) else upper / 2
        lower = max(lower, upper / 1000, 1e-3)
        share, left = divmod(count, _SPREAD)
        for step in range(_SPREAD):
            weight = share + (1 if step < left else 0)
            if weight:
                points.append((lower * (upper / lower) ** ((step + 0.5) / _SPREAD), weight))
    return points
