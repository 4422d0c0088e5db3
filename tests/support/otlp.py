"""OTLP JSON from real SDK spans: the encoding the collector's file exporter writes (protobuf
JSON mapping, with trace and span ids as hex, as the OTLP/JSON specification requires)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item).hex()
            if key in _ID_FIELDS and isinstance(item, str)
            else _hex_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


def otlp_json_line(spans: Sequence[ReadableSpan]) -> str:
    return json.dumps(_hex_ids(MessageToDict(encode_spans(spans))))
