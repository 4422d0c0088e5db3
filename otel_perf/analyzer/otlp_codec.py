"""OTLP request decoding for both transports and encodings, with the OTLP-correct errors.

OTLP/JSON is the protobuf JSON mapping except that trace and span ids are hex, not base64; the
standard `json_format` parser is used once the ids are converted.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import DecodeError, Message

MessageT = TypeVar("MessageT", bound=Message)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = frozenset(("traceId", "spanId", "parentSpanId"))


class BadRequest(ValueError):
    """Malformed OTLP: answered with HTTP 400 / gRPC INVALID_ARGUMENT, never retried by the sender."""


def decode_protobuf(payload: bytes, message: MessageT) -> MessageT:
    try:
        message.ParseFromString(payload)
    except (DecodeError, RuntimeError) as error:
        raise BadRequest(f"payload is not a valid {message.DESCRIPTOR.name} protobuf: {error}") from None
    return message


def _ids_to_base64(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {}
        for key, item in value.items():
            if key in _ID_FIELDS and isinstance(item, str):
                try:
                    converted[key] = base64.b64encode(bytes.fromhex(item)).decode() if item else ""
                except ValueError:
                    raise BadRequest(f"{key} must be hex, got {item[:40]!r}") from None
            else:
                converted[key] = _ids_to_base64(item)
        return converted
    if isinstance(value, list):
        return [_ids_to_base64(item) for item in value]
    return value


def decode_json(payload: bytes, message: MessageT) -> MessageT:
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"payload is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("payload must be a JSON object")
    try:
        return ParseDict(_ids_to_base64(document), message, ignore_unknown_fields=True)
    except (ParseError, binascii.Error, TypeError, ValueError) as error:
        raise BadRequest(f"payload is not a valid OTLP JSON {message.DESCRIPTOR.name}: {error}") from None


def decode(payload: bytes, content_type: str, message: MessageT) -> MessageT:
    """Raises `BadRequest`, or `UnsupportedMediaType` for anything but protobuf and JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == PROTOBUF:
        return decode_protobuf(payload, message)
    if media == JSON:
        return decode_json(payload, message)
    raise UnsupportedMediaType(f"Content-Type must be {PROTOBUF} or {JSON}, got {content_type or 'none'!r}")


class UnsupportedMediaType(ValueError):
    """Answered with HTTP 415."""
