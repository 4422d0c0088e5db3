"""`otel-perf report`: one self-contained HTML page from alerts (JSON lines, the alert contract) and/or
exported traces (OTLP JSON lines, decoded and analysed by `otel_perf.offline`, as `otel-perf
analyze` does). It opens anywhere, offline: CSS inline, charts drawn here as SVG, no script.

What it shows, and from where:
- Health: the seeds' rule (a team's monitor: the mean of component health percentages, EXCELLENT
  from 95, GOOD from 85, DEGRADED from 70, else CRITICAL). Components, each where the input tells:
  Requests (the share that succeeded: from the traces; alerts only, 100 minus the highest error
  rate still firing), Queries & calls and Latency (100 minus a weight per open issue by severity:
  low 2, medium 5, high 10, critical 20; N+1s, slow queries and calls, pool waits under the first;
  trends and other slow spans under the second), System (the seed's 100 minus utilisation, averaged
  over the resources alerted on; only with resource alerts).
- Endpoints over time (traces): p50/p95/p99, error rate and throughput per time bucket, the bucket
  chosen so the data's span is at most `MAX_BUCKETS` of them; version changes (`service.version`)
  and trend change points (trend alerts) marked on the latency charts.
- N+1 offenders, slow queries, resources and every other alert, from the alerts; a waterfall of an
  offender's trace where the traces hold it.

No literal leaves: statements and URLs come from the alerts (already templates) or are normalised
here exactly as the detectors normalise them; every text is HTML-escaped.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from otel_perf import __version__
from otel_perf.offline import NoTraceLines, analyze_traces, read_trace_file, replay_bounds
from otel_perf.processors import semconv
from otel_perf.processors.detectors.calls import statement_template
from otel_perf.processors.errors import OtlpFormatError
from otel_perf.processors.normalize import normalize_sql, url_template
from otel_perf.processors.tree import MISSING_SPAN_NAME, SpanNode, TraceTree, starts_request
from otel_perf.settings import Settings

MAX_BUCKETS = 48  # points per chart at most: the bucket is the smallest step that fits the span
_BUCKET_STEPS_S = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172800, 604800,
)  # fmt: skip
MAX_ENDPOINT_CHARTS = 12  # the busiest endpoints get charts; the table lists up to MAX_ENDPOINT_ROWS
MAX_ENDPOINT_ROWS = 100
MAX_WATERFALLS = 3
MAX_WATERFALL_ROWS = 60
SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}
SEVERITY_WEIGHT = {"low": 2, "medium": 5, "high": 10, "critical": 20}
STATUS_THRESHOLDS = ((95.0, "EXCELLENT"), (85.0, "GOOD"), (70.0, "DEGRADED"))
N_PLUS_ONE_TYPES = ("n_plus_one", "mn_plus_one")
QUERY_TYPES = frozenset({*N_PLUS_ONE_TYPES, "consecutive_calls", "unused_eager_load", "pool_exhaustion"})
RESOLVED = "resolved"


# ---------------------------------------------------------------------------------------------- input


def read_alerts(lines: Iterable[str], source: str, on_error: Callable[[str], None]) -> list[dict[str, Any]]:
    """Alert objects from JSON lines; a line that is no JSON object with a `type` is named and skipped."""
    alerts: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            alert = json.loads(text)
        except ValueError:
            on_error(f"{source}: line {number}: not JSON")
            continue
        if not isinstance(alert, dict) or not isinstance(alert.get("type"), str):
            on_error(f"{source}: line {number}: not an alert (a JSON object with a `type`)")
            continue
        if not isinstance(alert.get("details"), dict):
            alert["details"] = {}
        alerts.append(alert)
    return alerts


@dataclass
class Inputs:
    """What the report is made of, as read."""

    alerts: list[dict[str, Any]]
    traces: dict[int, list[SpanNode]]
    alert_files: list[str] = field(default_factory=list)
    trace_files: list[str] = field(default_factory=list)
    analysed: bool = False  # the alerts came from analysing the traces (no alert file given)
    problems: list[str] = field(default_factory=list)


def load(
    alert_paths: Sequence[str | Path],
    trace_paths: Sequence[str | Path],
    settings: Settings,
    say: Callable[[str], None],
) -> Inputs:
    """Read every file (OSError for one that can't be read); without alert files, the traces'
    alerts are what `otel-perf analyze` would print for them."""
    problems: list[str] = []

    def problem(message: str) -> None:
        problems.append(message)
        if len(problems) <= 10:
            say(f"skipped {message}")

    alerts: list[dict[str, Any]] = []
    for path in alert_paths:
        say(f"Reading alerts {path}…")
        with Path(path).open(encoding="utf-8", errors="replace") as stream:
            alerts.extend(read_alerts(stream, str(path), problem))
    traces: dict[int, list[SpanNode]] = {}
    for path in trace_paths:
        say(f"Reading traces {path}…")

        def trace_problem(error: OtlpFormatError, source: str = str(path)) -> None:
            problem(f"{source}: {error}")

        with Path(path).open("rb") as binary:
            try:  # OTLP JSON lines, one indented OTLP document, or Jaeger's JSON
                read = read_trace_file(binary, str(path), trace_problem)
            except NoTraceLines as error:
                problem(str(error))
                read = {}
            for trace_id, nodes in read.items():
                traces.setdefault(trace_id, []).extend(nodes)
    if trace_paths:
        spans = sum(len(nodes) for nodes in traces.values())
        say(f"Read {spans} spans in {len(traces)} traces from {len(trace_paths)} file(s).")
    analysed = not alert_paths
    if analysed:
        alerts = [alert.to_json() for alert in analyze_traces(traces, settings)]
        say(f"Analysed the traces: {len(alerts)} alert(s).")
    return Inputs(
        alerts, traces, [str(p) for p in alert_paths], [str(p) for p in trace_paths], analysed, problems
    )


# ----------------------------------------------------------------------------------------- analysis


@dataclass
class Bucket:
    durations_ms: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass
class Endpoint:
    """One service's operation (the entry span's name, as the trend and error-rate monitors key it)."""

    service: str
    name: str
    durations_ms: list[float] = field(default_factory=list)
    errors: int = 0
    buckets: dict[int, Bucket] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.durations_ms)


@dataclass
class Timeline:
    """Requests from the traces, bucketed: the x axis every endpoint chart shares."""

    start_ns: int
    end_ns: int
    bucket_ns: int
    endpoints: list[Endpoint]
    versions: list[VersionChange]
    left_out: int  # requests dated far from the rest (see `offline.replay_bounds`)
    first_ns: int = 0  # the first request's start and the last one's end: the edge buckets are
    last_ns: int = 0  # only partly covered, and their throughput is counted over what is

    def covered_ns(self, bucket_start_ns: int) -> int:
        """How much of a bucket lies within the data (a whole bucket but at the edges)."""
        covered = min(bucket_start_ns + self.bucket_ns, self.last_ns or self.end_ns) - max(
            bucket_start_ns, self.first_ns
        )
        return covered if covered > 0 else self.bucket_ns

    @property
    def bucket_starts(self) -> list[int]:
        return list(range(self.start_ns, self.end_ns, self.bucket_ns))


@dataclass(frozen=True)
class VersionChange:
    service: str
    version: str
    previous: str
    at_ns: int


def bucket_seconds(span_ns: int) -> int:
    """The smallest step of `_BUCKET_STEPS_S` that cuts `span_ns` into at most `MAX_BUCKETS` buckets."""
    for step in _BUCKET_STEPS_S:
        if span_ns <= step * 10**9 * MAX_BUCKETS:
            return step
    return _BUCKET_STEPS_S[-1]


def timeline(traces: Mapping[int, Sequence[SpanNode]], settings: Settings) -> Timeline | None:
    """Every request of the traces (a service's entry span, as the monitors count them) by endpoint
    and time bucket, and where each service's version changed; None without a request."""
    requests: list[SpanNode] = [
        node
        for nodes in traces.values()
        for node in nodes
        if starts_request(node.parent_id is not None, node.kind) and node.name != semconv.ALERT_SPAN_NAME
    ]
    if not requests:
        return None
    low, high = replay_bounds(
        (node.end_ns for node in requests), int(settings.monitor.history_days * 86400e9)
    )
    kept = [node for node in requests if low <= node.end_ns <= high]
    first = min(node.start_ns for node in kept)
    step_ns = bucket_seconds(high - first) * 10**9
    start = first // step_ns * step_ns
    end = (high // step_ns + 1) * step_ns
    endpoints: dict[tuple[str, str], Endpoint] = {}
    for node in kept:
        key = (node.service, node.name)
        endpoint = endpoints.get(key)
        if endpoint is None:
            endpoint = endpoints[key] = Endpoint(node.service, node.name)
        duration_ms = node.duration_ns / 1e6
        endpoint.durations_ms.append(duration_ms)
        index = (max(node.start_ns, start) - start) // step_ns
        bucket = endpoint.buckets.get(index)
        if bucket is None:
            bucket = endpoint.buckets[index] = Bucket()
        bucket.durations_ms.append(duration_ms)
        if node.is_error:
            endpoint.errors += 1
            bucket.errors += 1
    ordered = sorted(endpoints.values(), key=lambda each: (-each.requests, each.service, each.name))
    return Timeline(
        start, end, step_ns, ordered, version_changes(kept), len(requests) - len(kept), first, high
    )


def version_changes(requests: Iterable[SpanNode]) -> list[VersionChange]:
    """When each service's next `service.version` was first seen (a rollout that mixes versions
    for a while changes at its first request on the new one)."""
    first_seen: dict[str, dict[str, int]] = defaultdict(dict)
    for node in requests:
        if node.service_version:
            seen = first_seen[node.service]
            if node.start_ns < seen.get(node.service_version, node.start_ns + 1):
                seen[node.service_version] = node.start_ns
    changes: list[VersionChange] = []
    for service, seen in sorted(first_seen.items()):
        ordered = sorted(seen.items(), key=lambda item: item[1])
        for (previous, _), (version, at_ns) in itertools.pairwise(ordered):
            changes.append(VersionChange(service, version, previous, at_ns))
    return changes


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank of an ascending list (what the seeds' reports show as p50/p95/p99)."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(str(value))
        except ValueError:
            return None
    number = float(value)
    return number if math.isfinite(number) else None


def _severity(alert: Mapping[str, Any]) -> str:
    severity = _text(alert.get("severity")).lower()
    return severity if severity in SEVERITY_RANK else "low"


def _details(alert: Mapping[str, Any]) -> Mapping[str, Any]:
    details = alert.get("details")
    return details if isinstance(details, Mapping) else {}


def _resolved(alert: Mapping[str, Any]) -> bool:
    return _details(alert).get("status") == RESOLVED


def parse_time(value: Any) -> int | None:
    """ISO 8601 (the alerts' `time`, `change_at`, `window_start`) as ns since the epoch."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1e9)


def _key(alert: Mapping[str, Any]) -> str:
    """What makes repeats of one issue one row: the fingerprint, else type and title."""
    return _text(alert.get("fingerprint")) or f"{alert.get('type')}\x1f{alert.get('title')}"


def open_issues(alerts: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Each issue's latest alert, unless that one says it is resolved."""
    latest: dict[str, Mapping[str, Any]] = {}
    for alert in alerts:
        latest[_key(alert)] = alert
    return [alert for alert in latest.values() if not _resolved(alert)]


def _location(details: Mapping[str, Any]) -> str:
    location = details.get("code_location")
    if not isinstance(location, Mapping):
        return ""
    where = _text(location.get("file"))
    if location.get("line") is not None:
        where += f":{location.get('line')}"
    function = _text(location.get("function"))
    text = f"{where} in {function}" if where and function else where or function
    role = _text(location.get("role"))
    return f"{text} ({role})" if text and role else text


def _what(alert: Mapping[str, Any]) -> str:
    """The statement or URL template an alert is about (templates: the detectors dropped literals)."""
    details = _details(alert)
    for key in ("statement", "url_template"):
        if details.get(key):
            method = _text(details.get("method")) if key == "url_template" else ""
            return f"{method} {details[key]}".strip()
    pattern = details.get("pattern")
    if isinstance(pattern, list) and pattern:
        return " · ".join(_text(each) for each in pattern)
    return _text(details.get("span_name")) or _text(alert.get("title"))


def _is_query_issue(alert: Mapping[str, Any]) -> bool:
    kind = _text(alert.get("type"))
    if kind in QUERY_TYPES:
        return True
    details = _details(alert)
    return kind == "slow_span" and bool(details.get("statement") or details.get("url_template"))


@dataclass
class Health:
    score: float
    status: str
    components: list[tuple[str, float, str]]  # name, score, what it was computed from


def status_of(score: float) -> str:
    for floor, status in STATUS_THRESHOLDS:
        if score >= floor:
            return status
    return "CRITICAL"


def health(alerts: Sequence[Mapping[str, Any]], line: Timeline | None) -> Health:
    """The documented rule (module docstring): the mean of the components the input measures."""
    issues = open_issues(alerts)
    components: list[tuple[str, float, str]] = []
    if line is not None:
        requests = sum(endpoint.requests for endpoint in line.endpoints)
        errors = sum(endpoint.errors for endpoint in line.endpoints)
        components.append(
            (
                "Requests",
                100.0 * (requests - errors) / requests,
                f"{requests - errors} of {requests} succeeded",
            )
        )
    else:
        rates = [
            rate
            for alert in issues
            if alert.get("type") == "error_rate"
            for rate in [_number(_details(alert).get("error_rate"))]
            if rate is not None
        ]
        worst = max(rates, default=0.0)
        basis = f"highest firing error rate {worst:.1%}" if rates else "no error-rate alert firing"
        components.append(("Requests", 100.0 * (1 - min(1.0, max(0.0, worst))), basis))

    def penalised(name: str, chosen: list[Mapping[str, Any]], nothing: str) -> None:
        penalty = sum(SEVERITY_WEIGHT[_severity(alert)] for alert in chosen)
        counts: defaultdict[str, int] = defaultdict(int)
        for alert in chosen:
            counts[_severity(alert)] += 1
        basis = ", ".join(f"{counts[level]} {level}" for level in SEVERITY_RANK if counts[level])
        components.append((name, max(0.0, 100.0 - penalty), f"open issues: {basis}" if chosen else nothing))

    penalised(
        "Queries & calls", [a for a in issues if _is_query_issue(a)], "no open N+1, slow query or pool wait"
    )
    latency_types = ("trend_degradation", "slow_span")
    penalised(
        "Latency",
        [a for a in issues if a.get("type") in latency_types and not _is_query_issue(a)],
        "no open trend or slow-span alert",
    )
    used: dict[str, float] = {}
    for alert in issues:
        if alert.get("type") == "resource":
            details = _details(alert)
            percent = _number(details.get("mean_percent"))
            if percent is not None:
                used[_text(alert.get("operation")) or _text(details.get("resource"))] = percent
    if used:
        system = sum(max(0.0, 100.0 - percent) for percent in used.values()) / len(used)
        components.append(
            ("System", system, ", ".join(f"{name} {p:.0f} %" for name, p in sorted(used.items())))
        )
    score = sum(component[1] for component in components) / len(components)
    return Health(round(score, 1), status_of(score), components)


@dataclass
class Offender:
    """One N+1 (all alerts with its fingerprint)."""

    alerts: list[Mapping[str, Any]]

    @property
    def latest(self) -> Mapping[str, Any]:
        return self.alerts[-1]

    @property
    def severity(self) -> str:
        return max((_severity(alert) for alert in self.alerts), key=SEVERITY_RANK.__getitem__)

    @property
    def occurrences(self) -> int:
        return sum(int(_number(alert.get("occurrences")) or 1) for alert in self.alerts)

    @property
    def per_request(self) -> int:
        return max((int(_number(_details(alert).get("count")) or 0) for alert in self.alerts), default=0)

    @property
    def total_ms(self) -> float:
        return max(
            (_number(_details(alert).get("total_duration_ms")) or 0.0 for alert in self.alerts), default=0
        )

    def trace(self, traces: Mapping[int, Sequence[SpanNode]]) -> tuple[int, Mapping[str, Any]] | None:
        """The newest of its alerts whose trace the traces hold, with that trace's id."""
        for alert in reversed(self.alerts):
            try:
                trace_id = int(_text(alert.get("trace_id")), 16)
            except ValueError:
                continue
            if trace_id in traces:
                return trace_id, alert
        return None


def grouped(alerts: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for alert in alerts:
        groups.setdefault(_key(alert), []).append(alert)
    return list(groups.values())


def offenders(alerts: Iterable[Mapping[str, Any]]) -> list[Offender]:
    """N+1s, worst first: severity, then how often, then queries per request."""
    found = [Offender(group) for group in grouped(a for a in alerts if a.get("type") in N_PLUS_ONE_TYPES)]
    found.sort(key=lambda each: (-SEVERITY_RANK[each.severity], -each.occurrences, -each.per_request))
    return found


# ---------------------------------------------------------------------------------------- rendering


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def _iso(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _time_label(time_ns: int, span_ns: int) -> str:
    moment = datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc)
    if span_ns > 2 * 86400 * 10**9:
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%H:%M" if span_ns > 3600 * 10**9 else "%H:%M:%S")


def _nice_ceiling(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _tick(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2g}" if value < 1 else f"{value:.1f}"


@dataclass
class Line:
    name: str
    color: str
    points: list[tuple[int, float | None]]  # (time ns, value or None for a gap)


@dataclass(frozen=True)
class Mark:
    at_ns: int
    label: str
    color: str
    kind: str  # "version" or "change"


def svg_chart(
    title: str,
    lines: Sequence[Line],
    start_ns: int,
    end_ns: int,
    unit: str,
    marks: Sequence[Mark] = (),
    width: int = 380,
    height: int = 170,
) -> str:
    """A line chart: time on x, `unit` on y from 0, a path per line (gaps break it), vertical marks."""
    left, right, top, bottom = 46, 10, 24, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    span = max(1, end_ns - start_ns)
    values = [value for line in lines for _, value in line.points if value is not None]
    y_max = _nice_ceiling(max(values, default=0.0) * 1.05)

    def x(time_ns: int) -> float:
        return left + (time_ns - start_ns) / span * plot_w

    def y(value: float) -> float:
        return top + plot_h - value / y_max * plot_h

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="14" class="chart-title">{_e(title)}</text>',
    ]
    legend_x = width - right
    for line in reversed(lines):
        parts.append(
            f'<text x="{legend_x}" y="14" text-anchor="end" class="legend" fill="{line.color}">'
            f"{_e(line.name)}</text>"
        )
        legend_x -= 8 + 7 * len(line.name)
    for fraction in (0.0, 0.5, 1.0):
        level = top + plot_h - fraction * plot_h
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{level:.1f}" y2="{level:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{left - 4}" y="{level + 3:.1f}" text-anchor="end" class="axis">'
            f"{_tick(y_max * fraction)}</text>"
        )
    parts.append(
        f'<text x="4" y="{top + plot_h / 2:.0f}" class="axis" '
        f'transform="rotate(-90 10 {top + plot_h / 2:.0f})">'
        f"{_e(unit)}</text>"
    )
    for index in range(4):
        at = start_ns + span * index // 3
        anchor = ("start", "middle", "middle", "end")[index]
        parts.append(
            f'<text x="{x(at):.1f}" y="{height - 8}" text-anchor="{anchor}" class="axis">'
            f"{_time_label(at, span)}</text>"
        )
    for mark in marks:
        if not start_ns <= mark.at_ns <= end_ns:
            continue
        mark_x = x(mark.at_ns)
        parts.append(
            f'<line x1="{mark_x:.1f}" x2="{mark_x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="{mark.color}" '
            f'class="mark mark-{mark.kind}"><title>{_e(mark.label)}</title></line>'
        )
        label_y = top + 9 + (10 if mark.kind == "change" else 0)
        parts.append(
            f'<text x="{mark_x + 3:.1f}" y="{label_y}" class="mark-label" fill="{mark.color}">'
            f"{_e(mark.label)}</text>"
        )
    for line in lines:
        commands: list[str] = []
        isolated: list[tuple[float, float]] = []
        run: list[tuple[float, float]] = []
        for time_ns, value in [*line.points, (0, None)]:
            if value is None:
                if len(run) == 1:
                    isolated.append(run[0])
                elif run:
                    commands.append("M" + " L".join(f"{px:.1f},{py:.1f}" for px, py in run))
                run = []
            else:
                run.append((x(time_ns), y(value)))
        if commands:
            parts.append(
                f'<path class="series" data-series="{_e(line.name)}" d="{" ".join(commands)}" '
                f'fill="none" stroke="{line.color}" stroke-width="1.6"/>'
            )
        for px, py in isolated:
            parts.append(
                f'<circle class="point" data-series="{_e(line.name)}" cx="{px:.1f}" cy="{py:.1f}" r="2.2" '
                f'fill="{line.color}"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _endpoint_marks(
    endpoint: Endpoint, line: Timeline, alerts: Sequence[Mapping[str, Any]]
) -> tuple[list[Mark], list[Mark]]:
    """(latency marks, error-rate marks): the service's version changes, and where the trend and
    error-rate monitors placed this endpoint's changes."""
    versions = [
        Mark(change.at_ns, f"v{change.version}", "#6c757d", "version")
        for change in line.versions
        if change.service == endpoint.service
    ]
    latency, errors = list(versions), list(versions)
    for alert in alerts:
        if alert.get("operation") != endpoint.name or alert.get("service") not in (None, endpoint.service):
            continue
        details = _details(alert)
        if alert.get("type") == "trend_degradation" and not _resolved(alert):
            at = parse_time(details.get("change_at"))
            if at is not None:
                increase = _number(details.get("increase_pct"))
                label = (
                    f"{_text(details.get('quantile')) or 'p95'} +{increase:.0f} %" if increase else "slower"
                )
                latency.append(Mark(at, label, "#c0392b", "change"))
        elif alert.get("type") == "error_rate" and not _resolved(alert):
            at = parse_time(details.get("window_start"))
            rate = _number(details.get("error_rate"))
            if at is not None:
                errors.append(
                    Mark(at, f"{rate:.0%} errors" if rate is not None else "errors", "#c0392b", "change")
                )
    return latency, errors


@dataclass
class _Series:
    """An endpoint's per-bucket values, one point per bucket (at its middle; None: no request)."""

    quantiles: dict[str, list[tuple[int, float | None]]]
    errors: list[tuple[int, float | None]]
    throughput: list[tuple[int, float | None]]
    per_minute: bool


def _series(endpoint: Endpoint, line: Timeline) -> _Series:
    half = line.bucket_ns // 2
    per_minute = line.bucket_ns >= 60 * 10**9
    unit_ns = (60 if per_minute else 1) * 10**9
    series = _Series({"p50": [], "p95": [], "p99": []}, [], [], per_minute)
    for index, start in enumerate(line.bucket_starts):
        bucket = endpoint.buckets.get(index)
        at = start + half
        if bucket is None:
            for points in series.quantiles.values():
                points.append((at, None))
            series.errors.append((at, None))
            series.throughput.append((at, 0.0))
            continue
        ordered = sorted(bucket.durations_ms)
        for name, points in series.quantiles.items():
            points.append((at, percentile(ordered, int(name[1:]) / 100)))
        series.errors.append((at, 100.0 * bucket.errors / len(ordered)))
        series.throughput.append((at, len(ordered) * unit_ns / line.covered_ns(start)))
    return series


_QUANTILE_COLORS = {"p50": "#2b8cbe", "p95": "#e67e22", "p99": "#c0392b"}


def latency_chart(
    endpoint: Endpoint, line: Timeline, alerts: Sequence[Mapping[str, Any]], width: int = 380
) -> str:
    series = _series(endpoint, line)
    marks, _ = _endpoint_marks(endpoint, line, alerts)
    lines = [Line(name, _QUANTILE_COLORS[name], points) for name, points in series.quantiles.items()]
    return svg_chart("Latency", lines, line.start_ns, line.end_ns, "ms", marks, width=width)


def endpoint_charts(endpoint: Endpoint, line: Timeline, alerts: Sequence[Mapping[str, Any]]) -> str:
    """Latency (p50/p95/p99, versions and change points marked), error rate and throughput."""
    series = _series(endpoint, line)
    _, error_marks = _endpoint_marks(endpoint, line, alerts)
    unit = "req/min" if series.per_minute else "req/s"
    return "".join(
        (
            latency_chart(endpoint, line, alerts),
            svg_chart(
                "Error rate",
                [Line("errors", "#c0392b", series.errors)],
                line.start_ns,
                line.end_ns,
                "%",
                error_marks,
            ),
            svg_chart(
                "Throughput",
                [Line("requests", "#27ae60", series.throughput)],
                line.start_ns,
                line.end_ns,
                unit,
            ),
        )
    )


def span_label(node: SpanNode) -> str:
    """A span as the waterfall names it: queries and calls by their templates, never their literals."""
    if node.statement is not None:
        return statement_template(node)
    if node.is_db:
        return normalize_sql(node.name, node.db_system)
    if node.is_http_client:
        return f"{node.http_method or ''} {url_template(node.http_url or '')}".strip()
    return node.name


def svg_waterfall(tree: TraceTree, offending: set[int], width: int = 1000) -> str:
    """The trace's spans in tree order, one bar per span on a shared time axis; the offenders red."""
    nodes = list(tree.walk())
    shown = nodes[:MAX_WATERFALL_ROWS]
    depth: dict[int, int] = {}
    for node in nodes:
        depth[node.span_id] = depth[node.parent.span_id] + 1 if node.parent is not None else 0
    t0 = min(node.start_ns for node in nodes)
    t1 = max(node.end_ns for node in nodes)
    span = max(1, t1 - t0)
    row, label_w, right = 17, 330, 70
    bar_w = width - label_w - right
    height = row * len(shown) + 30 + (row if len(nodes) > len(shown) else 0)
    parts = [
        f'<svg class="waterfall" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="trace waterfall">'
    ]
    for index in range(5):
        at = label_w + bar_w * index / 4
        parts.append(f'<line x1="{at:.1f}" x2="{at:.1f}" y1="14" y2="{height - 4}" class="grid"/>')
        parts.append(
            f'<text x="{at:.1f}" y="10" text-anchor="middle" class="axis">'
            f"{_ms(span / 1e6 * index / 4)}</text>"
        )
    for number, node in enumerate(shown):
        top = 18 + number * row
        label = span_label(node)
        if len(label) > 60:
            label = label[:59] + "…"
        indent = 4 + 10 * min(depth[node.span_id], 12)
        if node.span_id in offending:
            color, kind = "#c0392b", "offender"
        elif node.is_db:
            color, kind = "#2b8cbe", "db"
        elif node.kind == 3:
            color, kind = "#8e44ad", "call"
        elif node.name == MISSING_SPAN_NAME:
            color, kind = "#bbbbbb", "missing"
        else:
            color, kind = "#7f8c8d", "span"
        x = label_w + (node.start_ns - t0) / span * bar_w
        w = max(1.5, node.duration_ns / span * bar_w)
        title = f"{label} — {_ms(node.duration_ms)}"
        parts.append(
            f'<g class="span span-{kind}"><title>{_e(title)}</title>'
            f'<text x="{indent}" y="{top + 11}" class="span-label">{_e(label)}</text>'
            f'<rect x="{x:.1f}" y="{top + 2}" width="{w:.1f}" height="{row - 5}" rx="2" fill="{color}"/>'
            f'<text x="{min(x + w + 4, width - right + 4):.1f}" y="{top + 11}" class="axis">'
            f"{_ms(node.duration_ms)}</text></g>"
        )
    if len(nodes) > len(shown):
        parts.append(
            f'<text x="4" y="{height - 8}" class="axis">'
            f"… {len(nodes) - len(shown)} more span(s) not drawn</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """Cells are HTML already (each caller escapes its text)."""
    head = "".join(f"<th>{_e(header)}</th>" for header in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _badge(severity: str) -> str:
    return f'<span class="sev sev-{_e(severity)}">{_e(severity)}</span>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _empty(text: str) -> str:
    return f'<p class="empty">{_e(text)}</p>'


def _health_html(score: Health) -> str:
    rows = [(_e(name), f"{value:.1f}", _e(basis)) for name, value, basis in score.components]
    return (
        f'<div class="health status-{score.status.lower()}"><div class="score">{score.score:.0f}</div>'
        f'<div><div class="status">{_e(score.status)}</div><div class="rule">mean of the components below; '
        "EXCELLENT ≥ 95, GOOD ≥ 85, DEGRADED ≥ 70, else CRITICAL</div></div></div>"
        + _table(("Component", "Score", "From"), rows, "components")
    )


def _endpoints_html(line: Timeline | None, alerts: Sequence[Mapping[str, Any]], has_traces: bool) -> str:
    if line is None:
        return _empty(
            "No requests in the traces."
            if has_traces
            else "Charts per endpoint need traces: add --traces FILE."
        )
    span_ns = line.end_ns - line.start_ns
    intro = (
        f'<p class="meta">{_e(_iso(line.start_ns))} to {_e(_iso(line.end_ns))}, buckets of '
        f"{_e(_duration(line.bucket_ns))}"
        + (f"; {line.left_out} request(s) dated far from the rest left out" if line.left_out else "")
        + ".</p>"
    )
    rows = []
    for endpoint in line.endpoints[:MAX_ENDPOINT_ROWS]:
        ordered = sorted(endpoint.durations_ms)
        rate = endpoint.requests / (span_ns / 60e9)
        rows.append(
            (
                _e(endpoint.name),
                _e(endpoint.service),
                str(endpoint.requests),
                f"{100.0 * endpoint.errors / endpoint.requests:.2f} %",
                _ms(percentile(ordered, 0.50)),
                _ms(percentile(ordered, 0.95)),
                _ms(percentile(ordered, 0.99)),
                f"{rate:.2f}",
            )
        )
    table = _table(
        ("Endpoint", "Service", "Requests", "Errors", "p50", "p95", "p99", "req/min"), rows, "endpoints"
    )
    cards = []
    for endpoint in line.endpoints[:MAX_ENDPOINT_CHARTS]:
        cards.append(
            f'<div class="card endpoint" data-endpoint="{_e(endpoint.name)}"><h3>{_e(endpoint.name)} '
            f"<small>{_e(endpoint.service)} · {endpoint.requests} requests</small></h3>"
            f"{endpoint_charts(endpoint, line, alerts)}</div>"
        )
    more = len(line.endpoints) - MAX_ENDPOINT_CHARTS
    note = f'<p class="meta">{more} quieter endpoint(s) in the table only.</p>' if more > 0 else ""
    return intro + table + "".join(cards) + note


def _duration(ns: int) -> str:
    seconds = ns // 10**9
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds} s"


def _trends_html(alerts: Sequence[Mapping[str, Any]], line: Timeline | None) -> str:
    trends = grouped(a for a in alerts if a.get("type") == "trend_degradation")
    rows = []
    for group in trends:
        firing = next((a for a in group if not _resolved(a)), group[0])
        details = _details(firing)
        resolved = next((a for a in group if _resolved(a)), None)
        baseline, current = _number(details.get("baseline_ms")), _number(details.get("current_ms"))
        increase = _number(details.get("increase_pct"))
        rows.append(
            (
                _badge(_severity(firing)),
                _e(firing.get("operation")),
                _e(firing.get("service")),
                _e(details.get("quantile") or "p95"),
                f"{_ms(baseline)} → {_ms(current)}"
                + (f" (+{increase:.0f} %)" if increase is not None else ""),
                _e(details.get("change_at")),
                _e(details.get("version") or "–"),
                _e(f"resolved {resolved.get('time', '')}" if resolved else "firing"),
            )
        )
    body = (
        _table(
            ("Severity", "Endpoint", "Service", "Quantile", "Latency", "Change at", "Version", "Status"),
            rows,
            "trends",
        )
        if rows
        else _empty("No trend alert: no endpoint got slower than its baseline.")
    )
    if line is not None:
        changes = [
            (_e(change.service), f"{_e(change.previous)} → {_e(change.version)}", _e(_iso(change.at_ns)))
            for change in line.versions
        ]
        body += "<h3>Versions seen in the traces</h3>" + (
            _table(("Service", "Version", "First request"), changes, "versions")
            if changes
            else _empty("No service.version change in the traces.")
        )
        charted = {(e.service, e.name): e for e in line.endpoints}
        for group in trends:
            alert = group[0]
            endpoint = charted.get((_text(alert.get("service")), _text(alert.get("operation"))))
            if endpoint is not None:
                body += (
                    f'<div class="card trend" data-endpoint="{_e(endpoint.name)}"><h3>{_e(endpoint.name)} '
                    "<small>latency: the change point in red, versions in grey</small></h3>"
                    f"{latency_chart(endpoint, line, alerts, width=780)}</div>"
                )
    return body


def _offenders_html(found: Sequence[Offender], traces: Mapping[int, Sequence[SpanNode]], top: int) -> str:
    if not found:
        return _empty("No N+1 found.")
    rows = []
    for rank, offender in enumerate(found[:top], start=1):
        latest = offender.latest
        details = _details(latest)
        traced = offender.trace(traces)
        shown_id = _text(latest.get("trace_id"))
        trace_cell = f'<span title="{_e(shown_id)}">{_e(shown_id[:12])}…</span>' if shown_id else "–"
        if traced is not None and rank <= MAX_WATERFALLS:
            full = f"{traced[0]:032x}"
            trace_cell = f'<a href="#waterfall-{rank}" title="{full}">{full[:12]}… waterfall</a>'
        rows.append(
            (
                _badge(offender.severity),
                _e(latest.get("operation")),
                f"<code>{_e(_what(latest))}</code>",
                f"{offender.per_request}× ({_e(details.get('kind') or latest.get('type'))})",
                str(offender.occurrences),
                _ms(offender.total_ms),
                _e(_location(details) or "–"),
                _e(details.get("suggestion") or "–"),
                trace_cell,
            )
        )
    html_parts = [
        _table(
            (
                "Severity",
                "Endpoint",
                "Repeated",
                "Per request",
                "Seen",
                "Time in it",
                "Code location",
                "Fix",
                "Trace",
            ),
            rows,
            "offenders",
        )
    ]
    if len(found) > top:
        html_parts.append(f'<p class="meta">{len(found) - top} more N+1(s) not listed (--top).</p>')
    for rank, offender in enumerate(found[: min(top, MAX_WATERFALLS)], start=1):
        traced = offender.trace(traces)
        if traced is None:
            continue
        trace_id, alert = traced
        # Our own alert spans (after the trace's end) are no part of what the request did.
        tree = TraceTree(trace_id, [n for n in traces[trace_id] if n.name != semconv.ALERT_SPAN_NAME])
        offending = set()
        span_ids = alert.get("span_ids")
        for span_id in span_ids if isinstance(span_ids, list) else ():
            try:
                offending.add(int(_text(span_id), 16))
            except ValueError:
                continue
        html_parts.append(
            f'<div class="card" id="waterfall-{rank}"><h3>#{rank} {_e(alert.get("operation"))} '
            f"<small>trace {trace_id:032x} · {len(tree)} spans, the repeats in red</small></h3>"
            f"{svg_waterfall(tree, offending)}</div>"
        )
    return "".join(html_parts)


def _slow_html(alerts: Sequence[Mapping[str, Any]]) -> str:
    groups = grouped(a for a in alerts if a.get("type") == "slow_span")
    if not groups:
        return _empty("No slow query, call or span.")

    def worst(group: list[Mapping[str, Any]]) -> float:
        return max((_number(_details(a).get("duration_ms")) or 0.0 for a in group), default=0.0)

    groups.sort(key=lambda group: (-max(SEVERITY_RANK[_severity(a)] for a in group), -worst(group)))
    rows = []
    for group in groups:
        latest = group[-1]
        details = _details(latest)
        kind = "query" if details.get("statement") else "call" if details.get("url_template") else "span"
        durations = [d for a in group for d in [_number(_details(a).get("duration_ms"))] if d is not None]
        rows.append(
            (
                _badge(max((_severity(a) for a in group), key=SEVERITY_RANK.__getitem__)),
                _e(kind),
                f"<code>{_e(_what(latest))}</code>",
                _e(latest.get("operation")),
                str(len(group)),
                _ms(max(durations, default=None)),
                _ms(sum(durations) / len(durations) if durations else None),
                _ms(_number(details.get("threshold_ms"))),
                _e(_location(details) or "–"),
            )
        )
    return _table(
        (
            "Severity",
            "Kind",
            "Statement / call",
            "Endpoint",
            "Alerts",
            "Slowest",
            "Mean",
            "Threshold",
            "Code location",
        ),
        rows,
        "slow",
    )


def _resources_html(alerts: Sequence[Mapping[str, Any]]) -> str:
    chosen = [a for a in alerts if a.get("type") == "resource"]
    if not chosen:
        return _empty("No CPU, memory, disk or connection-pool alert.")
    rows = []
    for alert in chosen:
        details = _details(alert)
        mean = _number(details.get("mean_percent"))
        threshold = _number(details.get("threshold_percent"))
        bar = (
            '<svg class="gauge" xmlns="http://www.w3.org/2000/svg" width="120" height="12" role="img" '
            f'aria-label="{_e(mean)} %"><rect width="120" height="12" fill="#eee"/>'
            f'<rect width="{1.2 * min(100.0, mean or 0):.1f}" height="12" fill="#e67e22"/>'
            + (
                f'<line x1="{1.2 * min(100.0, threshold):.1f}" x2="{1.2 * min(100.0, threshold):.1f}" y1="0" '
                'y2="12" stroke="#333"/>'
                if threshold is not None
                else ""
            )
            + "</svg>"
        )
        rows.append(
            (
                _badge(_severity(alert)),
                _e(details.get("resource") or "–"),
                _e(alert.get("operation")),
                _e(alert.get("service")),
                f"{bar} {_e(mean)} %",
                f"{_e(details.get('max_percent', '–'))} %",
                f"{_e(threshold)} %",
                _e(details.get("window_start") or alert.get("time")),
                _e(details.get("status") or "–"),
            )
        )
    body = _table(
        ("Severity", "Resource", "Series", "Service", "Mean", "Max", "Threshold", "Window", "Status"),
        rows,
        "resources",
    )
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for alert in chosen:
        at = parse_time(_details(alert).get("window_start")) or parse_time(alert.get("time"))
        mean = _number(_details(alert).get("mean_percent"))
        if at is not None and mean is not None and not _resolved(alert):
            series[_text(alert.get("operation"))].append((at, mean))
    for name, points in series.items():
        if len(points) >= 2:
            points.sort()
            body += svg_chart(
                name, [Line("mean %", "#e67e22", list(points))], points[0][0], points[-1][0], "%"
            )
    return body


def _others_html(alerts: Sequence[Mapping[str, Any]]) -> str:
    shown = {*N_PLUS_ONE_TYPES, "slow_span", "trend_degradation", "resource"}
    groups = grouped(a for a in alerts if a.get("type") not in shown)
    if not groups:
        return _empty("No other alert.")
    rows = []
    for group in sorted(groups, key=lambda g: -max(SEVERITY_RANK[_severity(a)] for a in g)):
        latest = group[-1]
        rows.append(
            (
                _badge(max((_severity(a) for a in group), key=SEVERITY_RANK.__getitem__)),
                _e(latest.get("type")),
                _e(latest.get("operation")),
                _e(latest.get("title")),
                str(len(group)),
                _e(_details(latest).get("status") or "–"),
                _e(latest.get("time") or "–"),
            )
        )
    return _table(("Severity", "Type", "Endpoint", "Latest", "Alerts", "Status", "Time"), rows, "others")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f5f6f8;
color:#222}
header{background:#1f2d3d;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header .meta{color:#c8d1dc}main{padding:8px 28px 40px}
section{background:#fff;border-radius:6px;padding:12px 18px;margin:16px 0;box-shadow:0 1px 2px #0002}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:12px 0 6px}
h3 small{color:#666;font-weight:normal}
table{border-collapse:collapse;width:100%;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid #e3e6ea;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f0f2f5}code{font-size:12px;overflow-wrap:anywhere}
table.offenders td:nth-child(3),table.slow td:nth-child(3){min-width:260px;max-width:460px}
.meta{color:#555;font-size:13px}.empty{color:#666;font-style:italic}
.health{display:flex;gap:18px;align-items:center;margin:6px 0 10px}
.health .score{font-size:46px;font-weight:700;width:96px;height:96px;border-radius:50%;display:flex;
align-items:center;justify-content:center;color:#fff}
.health .status{font-size:26px;font-weight:700}.health .rule{color:#666;font-size:12px}
.status-excellent .score{background:#27ae60}.status-excellent .status{color:#27ae60}
.status-good .score{background:#16a085}.status-good .status{color:#16a085}
.status-degraded .score{background:#e67e22}.status-degraded .status{color:#e67e22}
.status-critical .score{background:#c0392b}.status-critical .status{color:#c0392b}
.card{border:1px solid #e3e6ea;border-radius:6px;padding:6px 10px;margin:10px 0}
.chart{margin:2px 8px 2px 0;background:#fff}.chart-title{font-size:12px;font-weight:600;fill:#333}
.legend{font-size:11px;font-weight:600}.axis{font-size:10px;fill:#666}.grid{stroke:#e6e6e6}
.mark{stroke-dasharray:4 3;stroke-width:1.2}.mark-label{font-size:10px}
.span-label{font-size:11px;fill:#222;font-family:ui-monospace,monospace}
.sev{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-size:12px}
.sev-low{background:#7f8c8d}.sev-medium{background:#f39c12}.sev-high{background:#e67e22}.sev-critical{background:#c0392b}
nav a{color:#fff;margin-right:14px}
"""


def render(inputs: Inputs, settings: Settings, *, top: int = 10, now_ns: int | None = None) -> str:
    """The whole page, as one string."""
    alerts = inputs.alerts
    line = timeline(inputs.traces, settings) if inputs.traces else None
    score = health(alerts, line)
    services = sorted(
        {_text(a.get("service")) for a in alerts if a.get("service")}
        | {e.service for e in (line.endpoints if line else [])}
    )
    title = "otel-perf report" + (f" — {', '.join(services[:5])}" if services else "")
    sources = [f"alerts: {path}" for path in inputs.alert_files] + [
        f"traces: {path}" for path in inputs.trace_files
    ]
    counts: defaultdict[str, int] = defaultdict(int)
    for alert in alerts:
        counts[_severity(alert)] += 1
    summary = ", ".join(
        f"{counts[level]} {level}" for level in reversed(list(SEVERITY_RANK)) if counts[level]
    )
    origin = " (from analysing the traces)" if inputs.analysed else ""
    spans = sum(len(nodes) for nodes in inputs.traces.values())
    generated = _iso(now_ns if now_ns is not None else time.time_ns())
    sections = [
        _section("health", "Health", _health_html(score)),
        _section("endpoints", "Endpoints over time", _endpoints_html(line, alerts, bool(inputs.traces))),
        _section("trends", "Latency trends", _trends_html(alerts, line)),
        _section("n-plus-one", "Top N+1 offenders", _offenders_html(offenders(alerts), inputs.traces, top)),
        _section("slow-queries", "Slow queries and calls", _slow_html(alerts)),
        _section("resources", "Resources", _resources_html(alerts)),
        _section("other", "Other alerts", _others_html(alerts)),
    ]
    nav = "".join(
        f'<a href="#{anchor}">{_e(name)}</a>'
        for anchor, name in (
            ("health", "Health"),
            ("endpoints", "Endpoints"),
            ("trends", "Trends"),
            ("n-plus-one", "N+1"),
            ("slow-queries", "Slow queries"),
            ("resources", "Resources"),
            ("other", "Other"),
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} — {_e(score.status)}</title><style>{_CSS}</style></head><body>"
        f'<header><h1>{_e(title)}</h1><p class="meta">{_e(" · ".join(sources))}<br>'
        f"{len(alerts)} alert(s){_e(origin)}{': ' + _e(summary) if summary else ''}"
        + (f" · {spans} spans in {len(inputs.traces)} traces" if inputs.traces else "")
        + f" · generated {_e(generated)} by otel-perf {_e(__version__)}</p><nav>{nav}</nav></header>"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )


def write(output: str | Path, page: str) -> None:
    """Replace `output` whole: a reader never sees half a page."""
    target = Path(output)
    handle, temporary = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(page)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
