"""What the analyzer's fuzzer (tests/e2e/test_analyzer_fuzz.py) found, one test per bug: each input
here made the analyzer answer 500, stall its way back to the collector, or log a traceback from a
background thread, and made `otel-perf analyze` stop with a traceback. Now each is a named
`OtlpFormatError` (HTTP 400 / INVALID_ARGUMENT, a skipped line), or read without harm."""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_perf.analyzer.server import _gunzip
from otel_perf.errors import OtlpFormatError, RequestTooLarge
from otel_perf.processors.monitors import spanmetrics
from otel_perf.processors.monitors.resources import samples_from_metrics
from otel_perf.processors.monitors.spanmetrics import SpanMetricsReader
from otel_perf.processors.otlp import decode_json, decode_protobuf
from otel_perf.processors.sources import read_json_lines, spans_from_proto

TRACE, SPAN = "ab" * 16, "cd" * 8


def _document(**span_fields: Any) -> dict[str, Any]:
    span = {"traceId": TRACE, "spanId": SPAN, "name": "GET /", "kind": 2, **span_fields}
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


def _nested_attribute(depth: int) -> str:
    """A request whose span has an attribute value `depth` arrays deep (3 JSON levels each)."""
    value = '{"arrayValue": {"values": [' * depth + '{"stringValue": "SELECT 1"}' + "]}}" * depth
    document = _document(attributes=[{"key": "db.statement", "value": "VALUE"}])
    return json.dumps(document).replace('"VALUE"', value)


# --- OTLP/JSON ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [150, 300, 320])
def test_json_nested_deeper_than_protobuf_allows_but_within_json_is_a_format_error(depth: int) -> None:
    """300 levels parse as JSON (Python's parser goes to ~1,000) and then overflowed the stack in
    the id conversion: a RecursionError, HTTP 500."""
    text = _nested_attribute(depth)
    with pytest.raises(OtlpFormatError, match=r"nested too deeply|Message too deep"):
        decode_json(text, ExportTraceServiceRequest())


def test_json_nesting_within_the_protobuf_limit_still_decodes() -> None:
    text = _nested_attribute(40)
    request = decode_json(text, ExportTraceServiceRequest())
    assert request.resource_spans[0].scope_spans[0].spans[0].attributes[0].key == "db.statement"


@pytest.mark.parametrize("digits", [4301, 100_000])
def test_a_number_longer_than_python_converts_is_a_format_error(digits: int) -> None:
    """A ValueError of its own (not a JSONDecodeError): HTTP 500 before."""
    text = json.dumps(_document()).replace('"kind": 2', f'"kind": {"9" * digits}')
    with pytest.raises(OtlpFormatError, match="a number of more than 4300 digits"):
        decode_json(text, ExportTraceServiceRequest())


def test_a_lone_surrogate_where_an_enum_goes_is_a_format_error() -> None:
    """upb raised SystemError ("returned a result with an exception set"): HTTP 500 before."""
    text = json.dumps(_document(status={"code": "\ud800"}))
    with pytest.raises(OtlpFormatError, match="not a valid OTLP JSON"):
        decode_json(text, ExportTraceServiceRequest())


def test_error_messages_stay_short_and_read_well() -> None:
    """The parser repeated "Failed to parse values field: " once per level (5 KB sent back)."""
    text = _nested_attribute(60)
    with pytest.raises(OtlpFormatError) as raised:
        decode_json(text, ExportTraceServiceRequest())
    assert len(str(raised.value)) < 400
    assert str(raised.value).count("Failed to parse values field") == 1
    with pytest.raises(OtlpFormatError) as cut:
        decode_json('{"resourceSpans": "abc', ExportTraceServiceRequest())
    assert "starting at column" in str(cut.value) and "at at" not in str(cut.value)


# --- OTLP protobuf --------------------------------------------------------------------------------


def _request_bytes(span: Span) -> bytes:
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    return request.SerializeToString()


def _with_bogus_name(span_bytes: bytes) -> bytes:
    """The span with its `name` (field 5, a string) sent again as a fixed32: wire type 5."""
    return span_bytes + bytes([5 << 3 | 5]) + b"\x01\x02\x03\x04"


def test_a_known_field_of_the_wrong_wire_type_is_not_forwarded() -> None:
    """protobuf keeps it as an unknown field and wrote it out again when the request was
    forwarded; the collector refused that request for good ("wrong wireType = 5 for field Name")
    and the analyzer retried it, holding up every request behind it."""
    span = Span(trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(SPAN), name="GET /", kind=2)
    span_bytes = _with_bogus_name(span.SerializeToString())
    scope = bytes([2 << 3 | 2, len(span_bytes)]) + span_bytes
    resource_spans = bytes([2 << 3 | 2, len(scope)]) + scope
    payload = bytes([1 << 3 | 2, len(resource_spans)]) + resource_spans
    assert len(UnknownFieldSet(ExportTraceServiceRequest.FromString(payload).resource_spans[0]
                               .scope_spans[0].spans[0])) == 1  # fmt: skip
    request = decode_protobuf(payload, ExportTraceServiceRequest())
    decoded = request.resource_spans[0].scope_spans[0].spans[0]
    assert len(UnknownFieldSet(decoded)) == 0
    assert decoded.name == "GET /"
    assert request.SerializeToString() == _request_bytes(span)  # what the collector gets: canonical


@pytest.mark.parametrize(
    ("trace_id", "span_id", "valid"),
    [
        (16, 8, True),
        (0, 0, True),
        (0, 8, True),
        (15, 8, False),
        (16, 7, False),
        (32, 8, False),
        (16, 9, False),
    ],
)
def test_link_ids_are_checked_like_span_ids(trace_id: int, span_id: int, valid: bool) -> None:
    """A link's ids of the wrong length went through, and the collector refused the whole request
    for good ("invalid TraceID length"), holding up every request behind it."""
    span = Span(trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(SPAN), name="GET /", kind=2)
    span.links.add(trace_id=b"\x01" * trace_id, span_id=b"\x02" * span_id)
    request = decode_protobuf(_request_bytes(span), ExportTraceServiceRequest())
    if valid:
        assert list(spans_from_proto(request)) == [int(TRACE, 16)]
    else:
        with pytest.raises(OtlpFormatError, match="a link's trace_id must be 16 bytes and its span_id 8"):
            spans_from_proto(request)


def test_link_ids_in_json_are_checked_too() -> None:
    text = json.dumps(_document(links=[{"traceId": "ab" * 15, "spanId": SPAN}]))
    with pytest.raises(OtlpFormatError, match="traceId must be 32 hex characters"):
        decode_json(text, ExportTraceServiceRequest())


# --- gzip bodies ----------------------------------------------------------------------------------


def test_every_gzip_member_is_read() -> None:
    """RFC 1952 allows several members in one body; only the first was read, and the request was
    accepted with part of its spans (or refused as a protobuf cut short)."""
    assert _gunzip(gzip.compress(b"first ") + gzip.compress(b"second"), 1024) == b"first second"
    assert _gunzip(gzip.compress(b"one"), 1024) == b"one"


@pytest.mark.parametrize(
    "body",
    [
        gzip.compress(b"x" * 200)[:-10],  # cut short
        gzip.compress(b"spans") + b"trailing bytes",  # followed by what is no gzip
        b"",
    ],
)
def test_a_broken_gzip_body_is_a_format_error(body: bytes) -> None:
    with pytest.raises(OtlpFormatError, match="invalid gzip body"):
        _gunzip(body, 1024)


def test_the_limit_counts_every_gzip_member() -> None:
    with pytest.raises(RequestTooLarge):
        _gunzip(gzip.compress(b"\x00" * 600) + gzip.compress(b"\x00" * 600), 1024)
    assert len(_gunzip(gzip.compress(b"\x00" * 512) + gzip.compress(b"\x00" * 512), 1024)) == 1024


# --- metrics for the monitors ---------------------------------------------------------------------


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _spanmetrics(bounds: list[float], counts: list[int]) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    metric = (
        request.resource_metrics.add()
        .scope_metrics.add()
        .metrics.add(name="traces.span.metrics.duration", unit="ms")
    )
    metric.histogram.aggregation_temporality = 1  # delta: read as it comes
    point = metric.histogram.data_points.add(
        time_unix_nano=10**18, explicit_bounds=bounds, bucket_counts=counts, count=sum(counts) % 2**64
    )
    point.attributes.extend(
        [_kv("service.name", "shop"), _kv("span.name", "GET /"), _kv("span.kind", "SPAN_KIND_SERVER")]
    )
    return request


@pytest.mark.parametrize(
    ("bounds", "counts"),
    [
        ([-5.0, 10.0], [1, 2, 3]),  # a negative bound: complex durations (TypeError in the watcher)
        ([5.0, math.inf], [1, 2, 3]),  # infinite: OverflowError in the sketch
        ([5.0, math.nan], [1, 2, 3]),
        ([5.0, 10.0], [2**64 - 1, 2**64 - 1, 1]),  # counts no OTLP int64 attribute can carry
    ],
)
def test_spanmetrics_that_are_no_duration_histogram_are_not_read(
    bounds: list[float], counts: list[int]
) -> None:
    assert SpanMetricsReader().requests(_spanmetrics(bounds, counts)) == []


def test_spanmetrics_in_seconds_past_what_a_float_holds_in_ms_are_not_read() -> None:
    request = _spanmetrics([1.0, 1e307], [1, 2, 3])
    request.resource_metrics[0].scope_metrics[0].metrics[0].unit = "s"  # times 1000: infinite
    assert SpanMetricsReader().requests(request) == []


def test_sane_spanmetrics_are_still_read() -> None:
    [found] = SpanMetricsReader().requests(_spanmetrics([0.0, 5.0, 10.0], [1, 2, 3, 4]))
    assert found.count == 10 and all(math.isfinite(value) and value >= 0 for value, _ in found.durations)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e308])
def test_utilisation_that_is_no_number_is_not_sampled(value: float) -> None:
    request = ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    resource.resource.attributes.extend([_kv("service.name", "shop"), _kv("host.name", "web-1")])
    metrics = resource.scope_metrics.add().metrics
    memory = metrics.add(name="system.memory.utilization")
    memory.gauge.data_points.add(as_double=value, time_unix_nano=10**18, attributes=[_kv("state", "used")])
    cpu = metrics.add(name="system.cpu.utilization")
    cpu.gauge.data_points.add(as_double=0.25, time_unix_nano=10**18, attributes=[_kv("state", "idle")])
    assert [(name, percent) for _, name, percent, _ in samples_from_metrics(request)] == [
        ("cpu on web-1", 75.0)
    ]


# --- `otel-perf analyze` lines --------------------------------------------------------------------


@pytest.mark.parametrize("line", ['{"foo": 1}', "{}", '{"resource_spans": []}'])
def test_a_json_object_that_is_no_otlp_is_a_named_line(line: str) -> None:
    """It was skipped without a word, as if it were the metrics of the same export."""
    with pytest.raises(OtlpFormatError, match="line 1: not OTLP"):
        list(read_json_lines([line]))


def test_metrics_and_logs_of_the_same_export_are_still_skipped_quietly() -> None:
    lines = ['{"resourceMetrics": []}', '{"resourceLogs": []}', json.dumps(_document())]
    assert [node.name for _, node in read_json_lines(lines)] == ["GET /"]


def test_cumulative_streams_remembered_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sender inventing a new label set per report can't grow the reader's memory for ever; the
    streams still reporting keep their baseline."""
    monkeypatch.setattr(spanmetrics, "MAX_STREAMS", 50)
    reader = SpanMetricsReader()

    def cumulative(route: str, counts: list[int]) -> ExportMetricsServiceRequest:
        request = _spanmetrics([5.0, 10.0], counts)
        metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
        metric.histogram.aggregation_temporality = 2  # cumulative: read against the last report
        metric.histogram.data_points[0].attributes.extend([_kv("http.route", route)])
        return request

    assert reader.requests(cumulative("/kept", [1, 1, 1])) == []  # the baseline
    for number in range(500):
        reader.requests(cumulative(f"/invented/{number}", [1, 1, 1]))
        if number % 10 == 0:
            reader.requests(cumulative("/kept", [1, 1, 1]))
    assert len(reader._last) <= 50
    [found] = reader.requests(cumulative("/kept", [2, 1, 1]))
    assert found.count == 1


def test_a_span_whose_start_is_unset_has_no_duration_rather_than_fifty_years() -> None:
    """A sender that leaves a span's start at 0 (or at a clock before 2000) while its end is now:
    its duration is unknown, not the time since 1970, so no slow-span alert of decades."""
    from otel_perf.processors.analysis import analyze_tree
    from otel_perf.processors.detectors import REGISTRY
    from otel_perf.processors.tree import KIND_CLIENT, KIND_SERVER, SpanNode, TraceTree

    now = 1_767_225_600 * 10**9
    root = SpanNode(1, None, "GET /orders", KIND_SERVER, now, now + 50 * 10**6)
    unset = SpanNode(
        2,
        1,
        "SELECT",
        KIND_CLIENT,
        0,
        now + 10**6,
        attributes={"db.system": "sqlite", "db.statement": "SELECT 1"},
    )
    assert unset.duration_ns == 0 and unset.start_ns == unset.end_ns
    detectors = [detector() for detector, _ in REGISTRY.values()]
    assert [finding.type for finding in analyze_tree(TraceTree(7, [root, unset]), detectors)] == []
