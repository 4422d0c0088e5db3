"""Build `SpanNode`s from the shapes spans arrive in: SDK `ReadableSpan` and OTLP protobuf (OTLP JSON
is decoded to protobuf first, `processors.otlp`).

Each adapter extracts the fields detectors read (`processors.semconv`) once, so detectors stay
ignorant of where a span came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, TracesData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_perf.processors import orm, semconv
from otel_perf.processors.errors import OtlpFormatError
from otel_perf.processors.otlp import message_from_json, parse_json
from otel_perf.processors.tree import (
    KIND_CLIENT,
    KIND_INTERNAL,
    SpanNode,
    TraceShape,
    mount_piece,
    mounted_name,
)

# (issue type, fingerprint, all issue types): what `analysis.span_marks` gives each flagged span.
Mark = tuple[str, str, list[str]]

_STATUS_ERROR = 2
_SDK_CLIENT = SpanKind.CLIENT


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
        str(resource_attributes.get(semconv.SERVICE_NAME, "unknown_service")),
        is_error=span.status.status_code.value == _STATUS_ERROR,
        service_version=_str_or_none(resource_attributes.get(semconv.SERVICE_VERSION)),
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
        if kv.key == semconv.SERVICE_NAME:
            service = kv.value.string_value or service
        elif kv.key == semconv.SERVICE_VERSION:
            version = kv.value.string_value or None
    return service, version


# (span message, service.name, service.version, instrumentation scope name)
ProtoSpan = tuple[Span, str, "str | None", str]


def proto_operations(spans: Sequence[ProtoSpan]) -> Callable[[Span, str], str]:
    """For one trace's spans: a request span's operation, its name or, behind a mounted
    sub-application whose span is among `spans`, the whole route (the rule `TraceTree.operation`
    files findings by, without building the tree)."""
    mounts: dict[str, dict[bytes, tuple[bytes, str]]] = {}  # service -> parent span id -> (id, piece)
    for span, service, _, _ in spans:
        if span.kind == KIND_INTERNAL and span.parent_span_id:
            route = next(
                (kv.value.string_value for kv in span.attributes if kv.key in semconv.HTTP_ROUTE), ""
            )
            if route:
                mounts.setdefault(service, {})[span.parent_span_id] = (span.span_id, mount_piece(route))

    def operation(span: Span, service: str) -> str:
        return mounted_name(span.name, span.span_id, mounts.get(service, {}))

    return operation


def spans_from_proto(request: ExportTraceServiceRequest | TracesData) -> dict[int, list[ProtoSpan]]:
    """The spans of an `ExportTraceServiceRequest` (or `TracesData`) by trace id, validated:
    ids of the wrong length, a span's or a link's, raise `OtlpFormatError` (the whole request is
    refused, as the collector refuses it: forwarded, it was refused for good downstream)."""
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
                if span.links:
                    _check_links(span)
                spans = traces.get(trace_id)
                if spans is None:
                    spans = traces[trace_id] = []
                spans.append((span, service, version, scope))
    return {int.from_bytes(trace_id, "big"): spans for trace_id, spans in traces.items()}


def _check_links(span: Span) -> None:
    for link in span.links:
        if len(link.trace_id) not in (0, 16) or len(link.span_id) not in (0, 8):
            raise OtlpFormatError(
                f"span {span.name!r}: a link's trace_id must be 16 bytes and its span_id 8, "
                f"got {len(link.trace_id)} and {len(link.span_id)}"
            )


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
    """The trace's shape from SDK spans, without building nodes (see `TraceShape`). A loop of its
    own, not a shared one over extracted fields: this runs for every span analysed."""
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


# --- the adapters both hosts analyse through (`analysis.analyse_trace`) -------------------------


class ReadableAdapter:
    """SDK `ReadableSpan`s (the span processor)."""

    @staticmethod
    def shape(spans: Sequence[ReadableSpan]) -> TraceShape:
        """First (the request is over), what only the ORM knew goes onto its queries' spans: the
        eager loads nobody read (`orm.settle`); then the shape, as `shape_of_readable`, saying
        whether any span got such a mark."""
        marked = orm.settle(spans)
        for span, attributes in marked:
            plain = plain_attributes(span)
            if isinstance(plain, dict):
                plain.update(attributes)
        shape = shape_of_readable(spans)
        return TraceShape(shape.spans, shape.max_client_siblings, shape.max_duration_ns, bool(marked))

    @staticmethod
    def nodes(spans: Sequence[ReadableSpan]) -> list[SpanNode]:
        return [node_from_readable(span) for span in spans]

    @staticmethod
    def annotate(node: SpanNode, mark: Mark) -> None:
        """Add the finding's attributes to an ended span before it is exported.

        Ended spans are read-only through the API; the attributes are written into the span's own
        mapping instead of copying the span (this runs for every flagged span). Only the processor
        holds the span at this point: it reaches the export processor after analysis.
        """
        issue, fingerprint, issues = mark
        attributes = plain_attributes(node.source)
        if not isinstance(attributes, dict):  # not an SDK span: leave it as it is
            return
        attributes[semconv.PERF_ISSUE] = issue
        attributes[semconv.PERF_FINGERPRINT] = fingerprint
        if len(issues) > 1:
            attributes[semconv.PERF_ISSUES] = tuple(issues)


class ProtoAdapter:
    """OTLP protobuf spans (the analyzer), as `spans_from_proto` yields them."""

    shape = staticmethod(shape_of_proto)

    @staticmethod
    def nodes(spans: Sequence[ProtoSpan]) -> list[SpanNode]:
        return [node_from_proto(*span) for span in spans]

    @staticmethod
    def annotate(node: SpanNode, mark: Mark) -> None:
        """Add the finding's attributes in the protobuf message itself; marks already there (the
        app's, mode both) stay."""
        issue, fingerprint, issues = mark
        attributes = node.source.attributes
        present = {kv.key for kv in attributes}
        if semconv.PERF_ISSUE not in present:
            attributes.append(KeyValue(key=semconv.PERF_ISSUE, value=AnyValue(string_value=issue)))
            attributes.append(
                KeyValue(key=semconv.PERF_FINGERPRINT, value=AnyValue(string_value=fingerprint))
            )
        if len(issues) > 1 and semconv.PERF_ISSUES not in present:
            listed = ArrayValue(values=[AnyValue(string_value=issue) for issue in issues])
            attributes.append(KeyValue(key=semconv.PERF_ISSUES, value=AnyValue(array_value=listed)))


READABLE = ReadableAdapter()
PROTO = ProtoAdapter()


# --- OTLP JSON: through the protobuf path ------------------------------------------------------


# What else the collector's file exporter writes, one kind per line.
_OTHER_SIGNALS = frozenset(("resourceMetrics", "resourceLogs", "resourceProfiles"))


def read_json_lines(
    lines: Iterable[str], on_error: Callable[[OtlpFormatError], None] | None = None
) -> Iterator[tuple[int, SpanNode]]:
    """Nodes from OTLP JSON lines (one `TracesData` per line, as the collector's file exporter writes;
    blank lines and metrics or logs from the same exporter are skipped; a JSON object that is no
    OTLP at all is a malformed line). Each line is decoded exactly as the analyzer decodes an
    OTLP/JSON request.

    A malformed line raises `OtlpFormatError` naming its line number, or, with `on_error`, is
    reported there and skipped so the rest of the file is still read.
    """
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            document = parse_json(text)
            if "resourceSpans" not in document:
                if _OTHER_SIGNALS.isdisjoint(document):  # not something the exporter writes
                    raise OtlpFormatError("not OTLP (no resourceSpans, resourceMetrics nor resourceLogs)")
                continue
            # Materialise the line first: a bad span must not leave half a line behind.
            nodes = list(nodes_from_proto(message_from_json(document, TracesData())))
        except OtlpFormatError as error:
            named = OtlpFormatError(f"line {number}: {error}")
            if on_error is None:
                raise named from None
            on_error(named)
            continue
        yield from nodes
