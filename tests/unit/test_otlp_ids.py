"""One vocabulary for OTLP/JSON ids: protobuf's base64 ones turned into hex read back the same."""

from __future__ import annotations

import json

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from otel_perf.processors.otlp import decode_json, hex_ids


def test_hex_ids_are_what_the_file_exporter_writes_and_decode_back() -> None:
    span = Span(trace_id=bytes(range(16)), span_id=bytes(range(8)), parent_span_id=bytes(range(8, 16)))
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    document = hex_ids(MessageToDict(request))
    written = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert written["traceId"] == bytes(range(16)).hex() and written["spanId"] == bytes(range(8)).hex()
    assert written["parentSpanId"] == bytes(range(8, 16)).hex()
    assert decode_json(json.dumps(document), ExportTraceServiceRequest()) == request
