"""OTLP JSON from real SDK spans: the encoding the collector's file exporter writes (protobuf
JSON mapping, with trace and span ids as hex, as the OTLP/JSON specification requires)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from otel_perf.processors.otlp import hex_ids


def otlp_json_line(spans: Sequence[ReadableSpan]) -> str:
    return json.dumps(hex_ids(MessageToDict(encode_spans(spans))))
