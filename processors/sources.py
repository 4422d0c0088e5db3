"""Build `SpanNode`s from the three shapes spans arrive in: SDK `ReadableSpan`, OTLP protobuf, OTLP JSON.

Each adapter extracts the fields detectors read (`processors.semconv`) once, so detectors stay
ignorant of where a span came from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_perf.processors import semconv
from otel_perf.processors.tree import KIND_CLIENT, SpanNode, TraceShape

_STATUS_ERROR = 2
_SDK_CLIENT = SpanKind.CLIENT


class OtlpFormatError(ValueError):
    """A payload that is not OTLP (bad JSON, wrong shape, ids of the wrong length)."""


_INT_FIELDS = ("http_status", "code_line")


def fill_from_attributes(node: SpanNode, attributes: Mapping[str, Any]) -> None:
    """Set a node's semantic fields from its attributes (either semconv generation), in one pass:
    this runs for every span analysed."""
    fields = semconv.NODE_FIELDS
    ranks: dict[str, int] = {}
    for key, value in attributes.items():
        spec = fields.get(key)
        if spec is None or value is None:
            continue
        field, rank = spec
        if rank < ranks.get(field, 99):
            ranks[field] = rank
            setattr(node, field, value if isinstance(value, str) else str(value))
    if not ranks:
        return
    for field in _INT_FIELDS:
        if field in ranks:
            setattr(node, field, _int_or_none(getattr(node, field)))
    if node.http_url is None and node.http_method is not None and node.server_address is not None:
        # Some SDKs split the URL into parts instead of url.full.
        path = semconv.first(attributes, semconv.URL_PATH) or "/"
        port = semconv.first(attributes, semconv.SERVER_PORT)
        authority = f"{node.server_address}:{port}" if port else node.server_address
        node.http_url = f"http://{authority}{path}"


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# --- SDK ReadableSpan --------------------------------------------------------------------------


def plain_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """The ended span's attribute dict itself. The public `attributes` is a read-only proxy over
    a locking mapping, ~20x slower to read, and this runs for every span analysed."""
    bounded = getattr(span, "_attributes", None)
    raw = getattr(bounded, "_dict", None)
    if isinstance(raw, dict):
        return raw
    return span.attributes or {}


def _fill_readable(node: SpanNode) -> None:
    node.attributes = attributes = plain_attributes(node.source)
    fill_from_attributes(node, attributes)


def node_from_readable(span: ReadableSpan) -> SpanNode:
    """A node from an SDK `ReadableSpan` (SDK span kinds are numbered from 0, OTLP's from 1);
    attributes are read when first needed."""
    parent = span.parent
    resource_attributes = span.resource.attributes
    node = SpanNode(
        span.context.span_id,
        parent.span_id if parent is not None else None,
        span.name,
        span.kind.value + 1,
        span.start_time or 0,
        span.end_time or span.start_time or 0,
        str(resource_attributes.get("service.name", "unknown_service")),
        is_error=span.status.status_code.value == _STATUS_ERROR,
        service_version=_str_or_none(resource_attributes.get("service.version")),
        scope=span.instrumentation_scope.name if span.instrumentation_scope is not None else "",
        filler=_fill_readable,
    )
    node.source = span
    return node


# --- OTLP protobuf -------------------------------------------------------------------------------


def any_value(value: AnyValue) -> Any:
    """Python value of an OTLP protobuf `AnyValue`."""
    field = value.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if field == "kvlist_value":
        return {item.key: any_value(item.value) for item in value.kvlist_value.values}
    return getattr(value, field)


def _proto_attributes(key_values: Iterable[KeyValue]) -> dict[str, Any]:
    """Only the keys detectors read, converted inline: attribute conversion dominates the
    analyzer's cost per span (each key and value access builds a Python object)."""
    interesting = semconv.INTERESTING_KEYS
    out: dict[str, Any] = {}
    for kv in key_values:
        key = kv.key
        if key in interesting:
            value = kv.value
            field = value.WhichOneof("value")
            if field == "string_value":
                out[key] = value.string_value
            elif field is not None:
                out[key] = any_value(value)
    return out


def _resource_identity(attributes: Iterable[KeyValue]) -> tuple[str, str | None]:
    service, version = "unknown_service", None
    for kv in attributes:
        if kv.key == "service.name":
            service = kv.value.string_value or service
        elif kv.key == "service.version":
            version = kv.value.string_value or None
    return service, version


# (span message, service.name, service.version, instrumentation scope name)
ProtoSpan = tuple[Span, str, "str | None", str]


def spans_from_proto(request: ExportTraceServiceRequest | TracesData) -> dict[int, list[ProtoSpan]]:
    """The spans of an `ExportTraceServiceRequest` (or `TracesData`) by trace id, validated:
    ids of the wrong length raise `OtlpFormatError` (the whole request is refused)."""
    traces: dict[bytes, list[ProtoSpan]] = {}
    for resource_spans in request.resource_spans:
        service, version = _resource_identity(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                trace_id, span_id, parent_id = span.trace_id, span.span_id, span.parent_span_id
                if len(trace_id) != 16 or len(span_id) != 8 or (parent_id and len(parent_id) != 8):
                    raise OtlpFormatError(
                        f"span {span.name!r}: trace_id must be 16 bytes, span_id and parent_span_id 8, "
                        f"got {len(trace_id)}, {len(span_id)} and {len(parent_id)}"
                    )
                spans = traces.get(trace_id)
                if spans is None:
                    spans = traces[trace_id] = []
                spans.append((span, service, version, scope))
    return {int.from_bytes(trace_id, "big"): spans for trace_id, spans in traces.items()}


def _fill_proto(node: SpanNode) -> None:
    node.attributes = attributes = _proto_attributes(node.source.attributes)
    if attributes:
        fill_from_attributes(node, attributes)


def node_from_proto(span: Span, service: str, version: str | None, scope: str = "") -> SpanNode:
    """A node from an OTLP protobuf span; attributes are read when first needed."""
    parent_id = span.parent_span_id
    node = SpanNode(
        int.from_bytes(span.span_id, "big"),
        int.from_bytes(parent_id, "big") if parent_id else None,
        span.name,
        span.kind,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        service,
        is_error=span.status.code == _STATUS_ERROR,
        service_version=version,
        scope=scope,
        filler=_fill_proto,
    )
    node.source = span
    return node


def nodes_from_proto(request: ExportTraceServiceRequest | TracesData) -> Iterator[tuple[int, SpanNode]]:
    """(trace_id, node) for every span of an `ExportTraceServiceRequest` (or `TracesData`)."""
    for trace_id, spans in spans_from_proto(request).items():
        for span, service, version, scope in spans:
            yield trace_id, node_from_proto(span, service, version, scope)


def shape_of_proto(spans: Iterable[ProtoSpan]) -> TraceShape:
    """The trace's shape from raw spans, without building nodes (see `TraceShape`)."""
    siblings: dict[bytes, int] = {}
    longest = 0
    count = 0
    for span, *_ in spans:
        count += 1
        if span.kind == KIND_CLIENT:
            parent = span.parent_span_id
            siblings[parent] = siblings.get(parent, 0) + 1
        duration = span.end_time_unix_nano - span.start_time_unix_nano
        if duration > longest:
            longest = duration
    return TraceShape(count, max(siblings.values(), default=0), longest)


def shape_of_readable(spans: Iterable[ReadableSpan]) -> TraceShape:
    siblings: dict[int, int] = {}
    longest = 0
    count = 0
    for span in spans:
        count += 1
        if span.kind is _SDK_CLIENT:
            parent = span.parent.span_id if span.parent is not None else 0
            siblings[parent] = siblings.get(parent, 0) + 1
        duration = (span.end_time or 0) - (span.start_time or 0)
        if duration > longest:
            longest = duration
    return TraceShape(count, max(siblings.values(), default=0), longest)


# --- OTLP JSON -----------------------------------------------------------------------------------

_JSON_VALUE_FIELDS = ("stringValue", "intValue", "doubleValue", "boolValue", "bytesValue")


def json_any_value(value: Mapping[str, Any]) -> Any:
    """Python value of an OTLP JSON `AnyValue` (int64 arrives as a string)."""
    for field in _JSON_VALUE_FIELDS:
        if field in value:
            raw = value[field]
            return int(raw) if field == "intValue" else raw
    if "arrayValue" in value:
        return [json_any_value(item) for item in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {
            kv["key"]: json_any_value(kv.get("value", {})) for kv in value["kvlistValue"].get("values", [])
        }
    return None


def json_attributes(key_values: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {kv["key"]: json_any_value(kv.get("value") or {}) for kv in key_values}


def _hex_id(value: Any, length: int, what: str) -> int | None:
    if not value:
        return None
    if not isinstance(value, str) or len(value) != length:
        raise OtlpFormatError(f"{what} must be {length} hex characters, got {value!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise OtlpFormatError(f"{what} is not hex: {value!r}") from None


_KIND_NAMES_JSON = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}


def nodes_from_json(document: Mapping[str, Any]) -> Iterator[tuple[int, SpanNode]]:
    """(trace_id, node) for every span of an OTLP JSON `TracesData` object (hex ids, as written
    by the collector's file exporter and accepted by OTLP/HTTP JSON)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("resourceSpans", []), list):
        raise OtlpFormatError("expected an object with a 'resourceSpans' list")
    for resource_spans in document.get("resourceSpans", []):
        resource = json_attributes((resource_spans.get("resource") or {}).get("attributes", []))
        service = str(resource.get("service.name") or "unknown_service")
        version = resource.get("service.version")
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope = str((scope_spans.get("scope") or {}).get("name", ""))
            for span in scope_spans.get("spans", []):
                trace_id = _hex_id(span.get("traceId"), 32, "traceId")
                span_id = _hex_id(span.get("spanId"), 16, "spanId")
                if trace_id is None or span_id is None:
                    raise OtlpFormatError(f"span {span.get('name')!r} has no traceId or spanId")
                kind = span.get("kind", 0)
                attributes = json_attributes(span.get("attributes", []))
                node = SpanNode(
                    span_id,
                    _hex_id(span.get("parentSpanId"), 16, "parentSpanId"),
                    str(span.get("name", "")),
                    _KIND_NAMES_JSON.get(kind, 0) if isinstance(kind, str) else int(kind),
                    int(span.get("startTimeUnixNano", 0)),
                    int(span.get("endTimeUnixNano", 0)),
                    service,
                    is_error=_json_status_code(span.get("status")) == _STATUS_ERROR,
                    attributes=attributes,
                    service_version=str(version) if version is not None else None,
                    scope=scope,
                )
                fill_from_attributes(node, attributes)
                node.source = span
                yield trace_id, node


def _json_status_code(status: Any) -> int:
    code = (status or {}).get("code", 0)
    if isinstance(code, str):
        return {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}.get(code, 0)
    return int(code)


def read_json_lines(
    lines: Iterable[str], on_error: Callable[[OtlpFormatError], None] | None = None
) -> Iterator[tuple[int, SpanNode]]:
    """Nodes from OTLP JSON lines (one `TracesData` per line; blank lines and lines without
    `resourceSpans`, e.g. metrics or logs from the same file exporter, are skipped).

    A malformed line raises `OtlpFormatError` naming its line number, or, with `on_error`, is
    reported there and skipped so the rest of the file is still read.
    """
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            try:
                document = json.loads(text)
            except json.JSONDecodeError as error:
                raise OtlpFormatError(
                    f"line {number}: not JSON ({error.msg} at column {error.colno})"
                ) from None
            if not isinstance(document, dict) or "resourceSpans" not in document:
                continue
            try:
                # Materialise the line first: a bad span must not leave half a line behind.
                nodes = list(nodes_from_json(document))
            except OtlpFormatError as error:
                raise OtlpFormatError(f"line {number}: {error}") from None
            except (TypeError, ValueError, AttributeError, KeyError) as error:
                raise OtlpFormatError(f"line {number}: malformed span ({error})") from None
        except OtlpFormatError as error:
            if on_error is None:
                raise
            on_error(error)
            continue
        yield from nodes
