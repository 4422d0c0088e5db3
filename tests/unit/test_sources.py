"""Span adapters: OTLP JSON lines, OTLP protobuf and SDK ReadableSpans all give the same SpanNodes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_perf.errors import OtlpFormatError
from otel_perf.processors.sources import (
    any_value,
    node_from_readable,
    nodes_from_proto,
    read_json_lines,
)
from otel_perf.processors.tree import KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, TraceTree

TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT = "b7ad6b7169203331"
CHILD = "00f067aa0ba902b7"
CHILD2 = "1111111111111111"


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}  # int64 arrives as a string
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def json_span(
    span_id: str,
    parent: str = "",
    *,
    trace_id: str = TRACE,
    kind: Any = 1,
    status: Any = None,
    attributes: list[dict] | None = None,
    name: str = "span",
    start: int = 1000,
    end: int = 2000,
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": attributes or [],
    }
    if status is not None:
        span["status"] = {"code": status}
    return span


def document(*spans: dict[str, Any], service: str = "shop", version: str | None = "1.4.2") -> dict[str, Any]:
    resource = [attr("service.name", service)] + ([attr("service.version", version)] if version else [])
    return {"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"spans": list(spans)}]}]}


def line(*spans: dict[str, Any], **kwargs: Any) -> str:
    return json.dumps(document(*spans, **kwargs))


OLD_SEMCONV = [
    attr("db.system", "postgresql"),
    attr("db.statement", "SELECT * FROM t WHERE id = 1"),
    attr("http.url", "http://api/x/1"),
    attr("http.method", "GET"),
    attr("http.status_code", 404),
]
NEW_SEMCONV = [
    attr("db.system.name", "postgresql"),
    attr("db.query.text", "SELECT * FROM t WHERE id = 1"),
    attr("url.full", "http://api/x/1"),
    attr("http.request.method", "GET"),
    attr("http.response.status_code", 404),
]


@pytest.mark.parametrize("attributes", [OLD_SEMCONV, NEW_SEMCONV], ids=["old-semconv", "stable-semconv"])
def test_json_semantic_fields_from_both_generations(attributes: list[dict]) -> None:
    nodes = list(read_json_lines([line(json_span(CHILD, ROOT, kind=3, attributes=attributes))]))
    assert len(nodes) == 1
    trace_id, node = nodes[0]
    assert trace_id == int(TRACE, 16)
    assert node.span_id == int(CHILD, 16)
    assert node.parent_id == int(ROOT, 16)
    assert node.kind == KIND_CLIENT
    assert node.db_system == "postgresql"
    assert node.statement == "SELECT * FROM t WHERE id = 1"
    assert node.http_url == "http://api/x/1"
    assert node.http_method == "GET"
    assert node.http_status == 404
    assert node.service == "shop"
    assert node.service_version == "1.4.2"
    assert node.start_ns == 1000 and node.end_ns == 2000


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (2, KIND_SERVER),
        ("SPAN_KIND_SERVER", KIND_SERVER),
        ("SPAN_KIND_CLIENT", KIND_CLIENT),
        (1, KIND_INTERNAL),
    ],
)
def test_json_kind_as_int_or_enum_name(kind: Any, expected: int) -> None:
    [(_, node)] = read_json_lines([line(json_span(ROOT, kind=kind))])
    assert node.kind == expected


@pytest.mark.parametrize(
    ("status", "is_error"),
    [(2, True), ("STATUS_CODE_ERROR", True), (1, False), ("STATUS_CODE_OK", False), (None, False)],
)
def test_json_status_code_as_int_or_enum_name(status: Any, is_error: bool) -> None:
    [(_, node)] = read_json_lines([line(json_span(ROOT, status=status))])
    assert node.is_error is is_error


def test_json_array_and_kvlist_values() -> None:
    attributes = [
        {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "7"}]}}},
        {"key": "meta", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": True}}]}}},
        attr("ratio", 0.5),
    ]
    [(_, node)] = read_json_lines([line(json_span(ROOT, attributes=attributes))])
    # Decoded as the analyzer decodes OTLP/JSON: to protobuf, whose values convert as below (the
    # node itself keeps only the attributes detectors read).
    values = {kv.key: any_value(kv.value) for kv in node.source.attributes}
    assert values == {"tags": ["a", 7], "meta": {"k": True}, "ratio": 0.5}


def test_json_url_built_from_parts_when_url_full_is_missing() -> None:
    attributes = [
        attr("http.request.method", "GET"),
        attr("server.address", "inventory"),
        attr("server.port", 8080),
        attr("url.path", "/items/9"),
    ]
    [(_, node)] = read_json_lines([line(json_span(CHILD, ROOT, kind=3, attributes=attributes))])
    assert node.http_url == "http://inventory:8080/items/9"


def test_json_spans_of_several_traces_and_resources_build_trees() -> None:
    other_trace = "f" * 32
    first = document(json_span(ROOT, kind="SPAN_KIND_SERVER"), json_span(CHILD, ROOT, kind=3))
    second = document(json_span(CHILD2, CHILD, kind=2, trace_id=TRACE), service="billing", version=None)
    third = document(json_span(ROOT, trace_id=other_trace))
    nodes = list(read_json_lines([json.dumps(first), "", json.dumps(second), json.dumps(third)]))
    by_trace: dict[int, list] = {}
    for trace_id, node in nodes:
        by_trace.setdefault(trace_id, []).append(node)
    assert set(by_trace) == {int(TRACE, 16), int(other_trace, 16)}
    tree = TraceTree(int(TRACE, 16), by_trace[int(TRACE, 16)])
    walked = [(node.span_id_hex, node.service) for node in tree.walk()]
    assert walked == [(ROOT, "shop"), (CHILD, "shop"), (CHILD2, "billing")]
    assert tree.nodes[int(CHILD2, 16)].service_version is None


def test_json_lines_without_resource_spans_are_skipped() -> None:
    metrics = json.dumps({"resourceMetrics": []})
    assert list(read_json_lines([metrics, "   ", "\n"])) == []


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("{not json", "not JSON"),
        (line(json_span("abc")), "spanId"),  # wrong length
        (line(json_span(ROOT, trace_id="abcd")), "traceId must be 32 hex characters"),
        (line(json_span("zzzzzzzzzzzzzzzz")), "spanId is not hex"),
        (line(json_span(ROOT, trace_id="g" * 32)), "traceId is not hex"),
        (line(json_span(CHILD, "123")), "parentSpanId"),
        (line(json_span("")), "span_id and parent_span_id 8, got 16, 0"),
        (line(json_span(ROOT, trace_id="")), "trace_id must be 16 bytes"),
        (json.dumps({"resourceSpans": "oops"}), "resourceSpans"),
        (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [7]}]}]}), "not a valid OTLP JSON"),
        (line(json_span(ROOT, start="soon")), "startTimeUnixNano"),  # type: ignore[arg-type]
    ],
)
def test_malformed_json_raises_naming_the_line(bad_line: str, fragment: str) -> None:
    good = line(json_span(ROOT))
    with pytest.raises(OtlpFormatError) as raised:
        list(read_json_lines([good, "", bad_line, good]))
    assert "line 3" in str(raised.value)
    assert fragment in str(raised.value)


def test_malformed_lines_reported_and_skipped_with_on_error() -> None:
    errors: list[OtlpFormatError] = []
    good_one = line(json_span(ROOT, name="one"))
    half_bad = line(json_span(CHILD, name="ok-in-bad-line"), json_span("xyz", name="bad"))
    good_two = line(json_span(CHILD2, name="two"))
    nodes = list(read_json_lines([good_one, "{broken", half_bad, good_two], on_error=errors.append))
    assert [node.name for _, node in nodes] == ["one", "two"]  # no half line
    assert len(errors) == 2
    assert "line 2" in str(errors[0])
    assert "line 3" in str(errors[1])


@pytest.mark.parametrize("bad", ["[]", '"text"', "42", '{"resourceSpans": 7}', "[" * 100_000])
def test_a_line_that_is_not_an_otlp_object_is_named(bad: str) -> None:
    with pytest.raises(OtlpFormatError, match="line 1"):
        list(read_json_lines([bad]))


# --- OTLP protobuf -------------------------------------------------------------------------------


def kv(key: str, **value: Any) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def proto_request(spans: list[ProtoSpan], service: str = "inventory") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [kv("service.name", string_value=service), kv("service.version", string_value="2.0")]
    )
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


def test_nodes_from_proto() -> None:
    trace_id = bytes.fromhex(TRACE)
    root = ProtoSpan(
        trace_id=trace_id,
        span_id=bytes.fromhex(ROOT),
        name="GET /items/{id}",
        kind=ProtoSpan.SPAN_KIND_SERVER,
        start_time_unix_nano=10,
        end_time_unix_nano=90,
        attributes=[
            kv("http.route", string_value="/items/{id}"),
            kv("http.response.status_code", int_value=500),
            kv("ignored.key", string_value="x"),
        ],
        status=ProtoStatus(code=ProtoStatus.STATUS_CODE_ERROR),
    )
    child = ProtoSpan(
        trace_id=trace_id,
        span_id=bytes.fromhex(CHILD),
        parent_span_id=bytes.fromhex(ROOT),
        name="SELECT",
        kind=ProtoSpan.SPAN_KIND_CLIENT,
        start_time_unix_nano=20,
        end_time_unix_nano=30,
        attributes=[
            kv("db.system.name", string_value="postgresql"),
            kv("db.query.text", string_value="SELECT * FROM items WHERE id = $1"),
        ],
    )
    nodes = list(nodes_from_proto(proto_request([root, child])))
    assert [trace for trace, _ in nodes] == [int(TRACE, 16)] * 2
    root_node, child_node = (node for _, node in nodes)
    assert root_node.span_id == int(ROOT, 16) and root_node.parent_id is None
    assert root_node.kind == KIND_SERVER
    assert root_node.is_error is True
    assert root_node.http_route == "/items/{id}"
    assert root_node.http_status == 500
    assert "ignored.key" not in root_node.attributes
    assert root_node.service == "inventory" and root_node.service_version == "2.0"
    assert child_node.parent_id == int(ROOT, 16)
    assert child_node.kind == KIND_CLIENT
    assert child_node.is_error is False
    assert child_node.db_system == "postgresql"
    assert child_node.statement == "SELECT * FROM items WHERE id = $1"
    assert child_node.duration_ns == 10
    tree = TraceTree(int(TRACE, 16), [node for _, node in nodes])
    assert tree.root is root_node and root_node.children == [child_node]


def test_proto_any_value_arrays_and_kvlists() -> None:
    value = AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="x"), AnyValue(int_value=3)]))
    assert any_value(value) == ["x", 3]
    kvlist = AnyValue(kvlist_value=KeyValueList(values=[kv("a", bool_value=True), kv("b", double_value=1.5)]))
    assert any_value(kvlist) == {"a": True, "b": 1.5}
    assert any_value(AnyValue()) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"trace_id": b"\x01" * 8, "span_id": b"\x02" * 8},
        {"trace_id": b"\x01" * 16, "span_id": b"\x02" * 4},
        {"trace_id": b"\x01" * 16, "span_id": b""},
        {"trace_id": b"\x01" * 16, "span_id": b"\x02" * 8, "parent_span_id": b"\x03" * 3},
    ],
)
def test_proto_wrong_id_lengths_raise(fields: dict[str, bytes]) -> None:
    with pytest.raises(OtlpFormatError):
        list(nodes_from_proto(proto_request([ProtoSpan(name="bad", **fields)])))


# --- SDK ReadableSpan ----------------------------------------------------------------------------


def test_node_from_readable() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "service.version": "3.1"})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as server:
        server.set_attribute("http.route", "/cart")
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as query:
            query.set_attribute("db.system", "sqlite")
            query.set_attribute("db.statement", "SELECT * FROM cart WHERE id = ?")
            query.set_status(Status(StatusCode.ERROR, "boom"))
        with tracer.start_as_current_span("work"):
            pass
        with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER):
            pass
    provider.shutdown()
    nodes = {span.name: node_from_readable(span) for span in exporter.get_finished_spans()}
    server_node, query_node = nodes["GET /cart"], nodes["SELECT"]
    assert server_node.kind == KIND_SERVER
    assert query_node.kind == KIND_CLIENT
    assert nodes["work"].kind == KIND_INTERNAL
    assert nodes["publish"].kind == 4
    assert server_node.parent_id is None
    assert query_node.parent_id == server_node.span_id
    assert nodes["work"].parent_id == server_node.span_id
    assert query_node.is_error is True and server_node.is_error is False
    assert query_node.service == "checkout" and query_node.service_version == "3.1"
    assert query_node.db_system == "sqlite"
    assert query_node.statement == "SELECT * FROM cart WHERE id = ?"
    assert server_node.http_route == "/cart"
    assert query_node.duration_ns > 0
    assert query_node.source is not None
    tree = TraceTree(0, list(nodes.values()))
    assert tree.root is server_node
    assert [child.name for child in server_node.children] == ["SELECT", "work", "publish"]
