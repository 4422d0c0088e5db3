"""OTLP payloads to protobuf messages: the one decoding path, for the analyzer's receivers and for
`otel-perf analyze` alike, so both read the same file the same way.

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

from otel_perf.processors.errors import OtlpFormatError

MessageT = TypeVar("MessageT", bound=Message)

_ID_HEX_LENGTHS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}


def decode_protobuf(payload: bytes, message: MessageT) -> MessageT:
    try:
        message.ParseFromString(payload)
    except (DecodeError, RuntimeError) as error:
        raise OtlpFormatError(f"payload is not a valid {message.DESCRIPTOR.name} protobuf: {error}") from None
    return message


def _ids_to_base64(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {}
        for key, item in value.items():
            if key in _ID_HEX_LENGTHS and isinstance(item, str):
                if item and len(item) != _ID_HEX_LENGTHS[key]:
                    raise OtlpFormatError(
                        f"{key} must be {_ID_HEX_LENGTHS[key]} hex characters, got {item[:40]!r}"
                    )
                try:
                    converted[key] = base64.b64encode(bytes.fromhex(item)).decode() if item else ""
                except ValueError:
                    raise OtlpFormatError(f"{key} is not hex: {item[:40]!r}") from None
            else:
                converted[key] = _ids_to_base64(item)
        return converted
    if isinstance(value, list):
        return [_ids_to_base64(item) for item in value]
    return value


def parse_json(payload: bytes | str) -> dict[str, Any]:
    """The JSON object of an OTLP/JSON payload."""
    try:
        document = json.loads(payload)
    except json.JSONDecodeError as error:
        raise OtlpFormatError(f"not JSON ({error.msg} at column {error.colno})") from None
    except UnicodeDecodeError:
        raise OtlpFormatError("not JSON (not UTF-8)") from None
    except RecursionError:
        raise OtlpFormatError("not JSON (nested too deeply)") from None
    if not isinstance(document, dict):
        raise OtlpFormatError("not an OTLP JSON object")
    return document


def message_from_json(document: dict[str, Any], message: MessageT) -> MessageT:
    """Fill `message` from a parsed OTLP/JSON object (hex ids)."""
    converted = _ids_to_base64(document)
    try:
        return ParseDict(converted, message, ignore_unknown_fields=True)
    except (ParseError, binascii.Error, TypeError, ValueError, RecursionError) as error:
        name = message.DESCRIPTOR.name
        raise OtlpFormatError(f"not a valid OTLP JSON {name}: {error}") from None


def decode_json(payload: bytes | str, message: MessageT) -> MessageT:
    return message_from_json(parse_json(payload), message)
