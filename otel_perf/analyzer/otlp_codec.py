"""OTLP request decoding for both transports and encodings, by content type (the formats themselves
are decoded by `otel_perf.processors.otlp`, shared with `otel-perf analyze`)."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message

from otel_perf.errors import UnsupportedMediaType
from otel_perf.processors.otlp import decode_json, decode_protobuf

MessageT = TypeVar("MessageT", bound=Message)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def decode(payload: bytes, content_type: str, message: MessageT) -> MessageT:
    """Raises `OtlpFormatError`, or `UnsupportedMediaType` for anything but protobuf and JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == PROTOBUF:
        return decode_protobuf(payload, message)
    if media == JSON:
        return decode_json(payload, message)
    raise UnsupportedMediaType(f"Content-Type must be {PROTOBUF} or {JSON}, got {content_type or 'none'!r}")
