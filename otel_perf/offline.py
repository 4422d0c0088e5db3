"""`otel-perf analyze`: the detectors over traces exported to files (OTLP JSON lines).

Spans are grouped by trace across all files, trees are analysed in order of trace end time, and
findings go through the same router as live traffic, with time taken from the spans, so a replay
of last week's export gives the alerts last week's traffic would have given.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any, TextIO

from otel_perf.alerting.alert import Alert
from otel_perf.alerting.router import AlertRouter
from otel_perf.processors import semconv
from otel_perf.processors.analysis import analyze_tree, build_detectors
from otel_perf.processors.errors import OtlpFormatError
from otel_perf.processors.findings import DiscardFindings, Finding, iso_time
from otel_perf.processors.monitors import Watcher, build_watcher
from otel_perf.processors.sources import read_json_lines
from otel_perf.processors.tree import (
    EARLIEST_NS,
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


class NoTraceLines(Exception):
    """A file with not one OTLP trace line in it: the message says what it holds instead and how to
    get OTLP out of where it came from."""


def read_trace_file(
    stream: IO[bytes],
    name: str,
    on_error: Callable[[OtlpFormatError], None] | None = None,
    progress: Progress | None = None,
) -> dict[int, list[SpanNode]]:
    """`read_traces` for one file, which must hold spans: a file without any (empty, CSV, Zipkin's
    JSON, metrics only) raises `NoTraceLines` rather than read as "no findings", which a CI gate
    would take for a pass. One whole JSON document is read too: an OTLP one spread over lines
    (protobuf's `MessageToJson` indents), and Jaeger's JSON (its query API's and UI's download),
    converted to OTLP JSON first and then decoded like any line (`jaeger_to_otlp`)."""
    seen = _Seen()
    raw_lines = _counted(stream, seen, progress)
    head: list[bytes] = []
    for raw in raw_lines:
        head.append(raw)
        if raw.strip():
            break
    lines: Iterable[bytes] = itertools.chain(head, raw_lines)
    report = on_error
    if head and _DOCUMENT_START.match(head[-1]):
        whole = b"".join(itertools.chain(head, raw_lines))
        document = _json_or_none(whole)
        if document is None:
            lines = whole.splitlines(keepends=True)
        else:
            texts, label = _document_lines(document, name, on_error)
            lines = [text.encode() for text in texts]
            if on_error is not None:
                report = _renamed(on_error, label)
    traces: dict[int, list[SpanNode]] = {}
    for trace_id, node in read_json_lines(_text_lines(lines, on_error), report):
        traces.setdefault(trace_id, []).append(node)
    if progress is not None:
        progress.finish_reading(seen.lines, seen.bytes)
    if not traces:
        raise NoTraceLines(f"no OTLP trace lines found in {name}: {seen.what_it_is()}")
    return traces


# A JSON document's first line rather than a JSON line: a list, an object opened alone on its line
# (pretty-printed), or Jaeger's {"data": [...]} on one line.
_DOCUMENT_START = re.compile(rb'\s*(\[|\{\s*$|\{\s*"data"\s*:)')


def _counted(stream: Iterable[bytes], seen: _Seen, progress: Progress | None) -> Iterator[bytes]:
    for raw in stream:
        seen.saw(raw)
        if progress is not None:
            progress.reading(seen.lines, seen.bytes)
        yield raw


def _renamed(on_error: Callable[[OtlpFormatError], None], label: str) -> Callable[[OtlpFormatError], None]:
    """Errors named by `label` ("Jaeger trace 3: ...") instead of by line: a document's lines are
    the converted traces, not the file's."""

    def report(error: OtlpFormatError) -> None:
        on_error(OtlpFormatError(re.sub(r"^line ", f"{label} ", str(error))))

    return report


def _document_lines(
    document: object, name: str, on_error: Callable[[OtlpFormatError], None] | None
) -> tuple[list[str], str]:
    """One whole JSON document as OTLP JSON lines, and what to call each in a message."""
    if isinstance(document, dict) and "resourceSpans" in document:
        return [json.dumps(document)], "OTLP document"
    if _is_jaeger(document):
        assert isinstance(document, dict)
        texts: list[str] = []
        for number, trace in enumerate(document["data"], start=1):
            try:
                texts.append(json.dumps(jaeger_to_otlp(trace)))
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                failure = OtlpFormatError(f"Jaeger trace {number}: not a Jaeger trace ({error!r:.200})")
                if on_error is None:
                    raise failure from None
                on_error(failure)
                texts.append("")  # keeps the numbers of what follows
        return texts, "Jaeger trace"
    raise NoTraceLines(f"no OTLP trace lines found in {name}: {_what_document(document)}")


def _is_jaeger(document: object) -> bool:
    if not isinstance(document, dict):
        return False
    data = document.get("data")
    return isinstance(data, list) and all(isinstance(trace, dict) and "spans" in trace for trace in data)


_JAEGER_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
# Tags Jaeger's OTLP translation made of OTLP fields: back into those fields, not attributes.
_JAEGER_FIELD_TAGS = frozenset(
    (
        "span.kind",
        "otel.status_code",
        "otel.status_description",
        "otel.scope.name",
        "otel.scope.version",
        "otel.library.name",
        "otel.library.version",
        "error",
    )
)


def jaeger_to_otlp(trace: dict[str, Any]) -> dict[str, Any]:
    """One trace of Jaeger's JSON (`{"traceID", "spans", "processes"}`) as an OTLP/JSON `TracesData`
    (hex ids, left-padded as Jaeger shortens them): the reverse of Jaeger's OTLP translation, for
    the fields the detectors read (kind, status, scope, parent, links, events, attributes)."""
    processes: dict[str, Any] = trace.get("processes") or {}
    grouped: dict[str, dict[tuple[str, str], list[dict[str, Any]]]] = {}
    for span in trace["spans"]:
        tags = {tag["key"]: tag.get("value") for tag in span.get("tags") or []}
        start_ns = int(span["startTime"]) * 1000
        parent = ""
        links = []
        for reference in span.get("references") or []:
            if reference.get("refType") == "CHILD_OF" and not parent:
                parent = str(reference["spanID"]).rjust(16, "0")
            else:
                links.append(
                    {
                        "traceId": str(reference["traceID"]).rjust(32, "0"),
                        "spanId": str(reference["spanID"]).rjust(16, "0"),
                    }
                )
        status_code = str(tags.get("otel.status_code", "")).upper()
        error = status_code == "ERROR" or tags.get("error") in (True, "true")
        otlp_span: dict[str, Any] = {
            "traceId": str(span["traceID"]).rjust(32, "0"),
            "spanId": str(span["spanID"]).rjust(16, "0"),
            "parentSpanId": parent,
            "name": str(span.get("operationName", "")),
            "kind": _JAEGER_KINDS.get(str(tags.get("span.kind", "internal")).lower(), 1),
            "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(start_ns + int(span.get("duration") or 0) * 1000),
            "attributes": _jaeger_attributes(
                tag for tag in span.get("tags") or [] if tag["key"] not in _JAEGER_FIELD_TAGS
            ),
            "events": [_jaeger_event(log) for log in span.get("logs") or []],
            "links": links,
            "status": {
                "code": 2 if error else 1 if status_code == "OK" else 0,
                "message": str(tags.get("otel.status_description", "")),
            },
        }
        scope = (
            str(tags.get("otel.scope.name", tags.get("otel.library.name", ""))),
            str(tags.get("otel.scope.version", tags.get("otel.library.version", ""))),
        )
        grouped.setdefault(str(span.get("processID", "")), {}).setdefault(scope, []).append(otlp_span)
    resource_spans = []
    for process_id, scopes in grouped.items():
        process = processes.get(process_id) or {}
        resource = [{"key": "service.name", "value": {"stringValue": str(process.get("serviceName", ""))}}]
        resource += _jaeger_attributes(process.get("tags") or [])
        resource_spans.append(
            {
                "resource": {"attributes": resource},
                "scopeSpans": [
                    {"scope": {"name": scope_name, "version": version}, "spans": spans}
                    for (scope_name, version), spans in scopes.items()
                ],
            }
        )
    return {"resourceSpans": resource_spans}


def _jaeger_attributes(tags: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"key": str(tag["key"]), "value": _jaeger_value(tag.get("type"), tag.get("value"))} for tag in tags
    ]


def _jaeger_value(kind: object, value: object) -> dict[str, Any]:
    if kind == "bool" or isinstance(value, bool):
        return {"boolValue": value in (True, "true")}
    if kind == "int64":
        return {"intValue": str(int(str(value)))}
    if kind == "float64":
        return {"doubleValue": float(str(value))}
    return {"stringValue": str(value)}


def _jaeger_event(log: dict[str, Any]) -> dict[str, Any]:
    fields = log.get("fields") or []
    name = next((str(field.get("value")) for field in fields if field.get("key") == "event"), "")
    return {
        "timeUnixNano": str(int(log["timestamp"]) * 1000),
        "name": name,
        "attributes": _jaeger_attributes(field for field in fields if field.get("key") != "event"),
    }


class _Seen:
    """What a file held, kept while it is read: enough to say what it is when it holds no spans.
    The first 1 MiB is kept, for a JSON document spread over lines (Jaeger's and Zipkin's downloads
    are pretty-printed)."""

    _KEEP = 1 << 20

    def __init__(self) -> None:
        self.lines = 0
        self.bytes = 0
        self.head = bytearray()

    def saw(self, raw: bytes) -> None:
        self.lines += 1
        self.bytes += len(raw)
        if len(self.head) < self._KEEP:
            self.head += raw[: self._KEEP - len(self.head)]

    def what_it_is(self) -> str:
        text = self.head.decode("utf-8", "replace").strip()
        if not text:
            return "the file is empty. " + _HOW_TO_EXPORT
        document = _json_or_none(text)
        if document is None and _DOCUMENT_START.match(self.head.lstrip().split(b"\n", 1)[0]):
            if len(self.head) >= self._KEEP:
                return "it looks like one large JSON document, not OTLP JSON lines. " + _HOW_TO_EXPORT
            return (
                "it is JSON spread over several lines but not one valid JSON document (OTLP JSON "
                "lines hold one whole request per line). " + _HOW_TO_EXPORT
            )
        if any(_is_other_signal(line) for line in text.splitlines()):
            return "it holds OTLP metrics or logs only, no traces. " + _HOW_TO_EXPORT
        if document is not None:
            return _what_document(document)
        first = next(line for line in text.splitlines() if line.strip())
        if first.lstrip().startswith("{"):
            return f"its lines are JSON but not OTLP (first line: {first[:80]!r}). " + _HOW_TO_EXPORT
        kind = "CSV or text" if "," in first or "\t" in first else "not JSON"
        return f"it looks like {kind} (first line: {first[:80]!r}). " + _HOW_TO_EXPORT


_HOW_TO_EXPORT = (
    "otel-perf reads OTLP JSON lines: the OpenTelemetry Collector's file exporter writes them "
    "(exporters: file: {path: traces.jsonl}, in the traces pipeline), and `otel-perf demo --save "
    "traces.jsonl` writes a sample."
)
_JAEGER = (
    'it is Jaeger\'s JSON (the query API\'s or the UI\'s download: {"data": [{"traceID", "spans", '
    '"processes"}]}), read as such, but it holds no span (an empty search result?). '
)
_ZIPKIN = (
    "it looks like Zipkin v2 JSON (a list of spans with traceId, id, localEndpoint), which is not "
    "OTLP. Convert it with an OpenTelemetry Collector: a zipkin receiver and the file exporter "
    "(exporters: file: {path: traces.jsonl}) in one traces pipeline, then `curl -H 'Content-Type: "
    "application/json' --data @FILE http://127.0.0.1:9411/api/v2/spans`."
)


def _json_or_none(text: str | bytes) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


_OTHER_SIGNALS = frozenset(("resourceMetrics", "resourceLogs", "resourceProfiles"))


def _is_other_signal(line: str) -> bool:
    document = _json_or_none(line)
    return isinstance(document, dict) and not _OTHER_SIGNALS.isdisjoint(document)


def _what_document(document: object) -> str:
    """What one whole JSON document is, by shape."""
    if isinstance(document, dict):
        if _is_jaeger(document):
            return _JAEGER + _HOW_TO_EXPORT
        if "resourceSpans" in document:
            return "it holds OTLP resourceSpans, but no span that could be read. " + _HOW_TO_EXPORT
        keys = ", ".join(list(map(str, document))[:5])
        return f"it is one JSON object (keys: {keys}), not OTLP JSON lines. " + _HOW_TO_EXPORT
    if isinstance(document, list):
        spans = [item for item in document if isinstance(item, dict)]
        spans += [
            item for trace in document if isinstance(trace, list) for item in trace if isinstance(item, dict)
        ]
        if spans and all("traceId" in span and "id" in span for span in spans[:20]):
            return _ZIPKIN
        return "it is one JSON list, not OTLP JSON lines. " + _HOW_TO_EXPORT
    return "it is one JSON value, not OTLP JSON lines. " + _HOW_TO_EXPORT


class Progress:
    """One line on a terminal, redrawn at most four times a second: lines read and MB/s, then traces
    analysed. Nothing at all when `stream` is not a terminal (a CI log, a file)."""

    _INTERVAL_S = 0.25

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.enabled = stream.isatty()
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._shown = False

    def reading(self, lines: int, size: int) -> None:
        if self._due():
            self._draw(self._reading_text(lines, size))

    def finish_reading(self, lines: int, size: int) -> None:
        if self.enabled:
            self._draw(self._reading_text(lines, size))

    def analysing(self, done: int, total: int) -> None:
        if self._due() or (self.enabled and done == total):
            self._draw(f"Analysed {done:,} of {total:,} traces")

    def clear(self) -> None:
        """Wipe the line, before anything else is written to the terminal."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False

    def _reading_text(self, lines: int, size: int) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-3)
        megabytes = size / 1e6
        return f"Read {lines:,} lines, {megabytes:,.1f} MB ({megabytes / elapsed:,.1f} MB/s)"

    def _due(self) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic()
        if now - self._drawn_at < self._INTERVAL_S:
            return False
        self._drawn_at = now
        return True

    def _draw(self, text: str) -> None:
        self._stream.write(f"\r\x1b[K{text}")
        self._stream.flush()
        self._shown = True


def _text_lines(stream: Iterable[bytes], on_error: Callable[[OtlpFormatError], None] | None) -> Iterator[str]:
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
    traces: dict[int, list[SpanNode]],
    settings: Settings,
    *,
    dedup: bool = True,
    progress: Progress | None = None,
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
    for done, tree in enumerate(trees, start=1):
        if progress is not None:
            progress.analysing(done, len(trees))
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
    ordered = [moment for moment in every if EARLIEST_NS <= moment <= latest] or every
    if not ordered:
        return 0, 0
    first = last = len(ordered) // 2
    while first > 0 and ordered[first] - ordered[first - 1] <= max_gap_ns:
        first -= 1
    while last < len(ordered) - 1 and ordered[last + 1] - ordered[last] <= max_gap_ns:
        last += 1
    return ordered[first], ordered[last]


_FUTURE_SLACK_NS = 3600 * 10**9


def _watch(watcher: Watcher, tree: TraceTree) -> None:
    for node in tree.nodes.values():
        if (
            starts_request(node.parent_id is not None, node.kind)
            and node.span_id not in tree.placeholders
            and node.name != semconv.ALERT_SPAN_NAME
        ):
            watcher.record(
                node.service,
                tree.operation(node),  # behind a mount, the whole route
                node.service_version,
                node.end_ns,
                node.duration_ns,
                node.is_error,
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
