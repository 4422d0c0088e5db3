"""OTLP payloads to protobuf messages: the one decoding path, for the analyzer's receivers and for
`otel-perf analyze` alike, so both read the same file the same way.

OTLP/JSON is the protobuf JSON mapping except that trace and span ids are hex, not base64; the
standard `json_format` parser is used once the ids are converted. Ids already in base64 (what
protobuf's own `MessageToJson` writes) are taken as they are.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeVar

from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import DecodeError, Message

from otel_perf.processors.errors import OtlpFormatError

MessageT = TypeVar("MessageT", bound=Message)

_ID_HEX_LENGTHS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}
# Deeper JSON is no OTLP request: protobuf stops at 100 nested messages, and an AnyValue level is
# three JSON levels (`{"arrayValue": {"values": [...]}}`). Checked before Python's own recursion
# limit is near (json.loads parses ~1,000 levels; `_ids_to_base64` must not reach that).
_MAX_JSON_DEPTH = 320
# Error messages go back to the sender and into `otel-perf analyze` output: the protobuf JSON
# parser repeats "Failed to parse values field: " once per level of nesting.
_MAX_MESSAGE = 300


_REPEATED = re.compile(r"(Failed to parse \w+ field: )\1+")


def _brief(text: str) -> str:
    text = _REPEATED.sub(r"\1… ", text)
    return text if len(text) <= _MAX_MESSAGE else f"{text[:_MAX_MESSAGE]}…"


def decode_protobuf(payload: bytes, message: MessageT) -> MessageT:
    """Parse `payload`, keeping only the fields this version of OTLP knows.

    Unknown fields are dropped, as the collector itself drops them when it decodes: protobuf keeps
    a known field sent with another wire type (a varint where the span name goes) as an unknown
    field, and forwarding it made the collector refuse the whole request, for good ("wrong
    wireType"), while the analyzer retried it and every request behind it waited."""
    try:
        message.ParseFromString(payload)
    except (DecodeError, RuntimeError) as error:
        name = message.DESCRIPTOR.name
        raise OtlpFormatError(_brief(f"payload is not a valid {name} protobuf: {error}")) from None
    message.DiscardUnknownFields()
    return message


def _is_base64_id(text: str, size: int) -> bool:
    """Whether `text` is the padded base64 of `size` bytes: protobuf's JSON mapping writes ids so
    (`MessageToJson`). Its length (24 or 12) is never a hex id's (32 or 16), so neither is taken
    for the other."""
    if len(text) != 4 * ((size + 2) // 3):
        return False
    try:
        return len(base64.b64decode(text, validate=True)) == size
    except (binascii.Error, ValueError):
        return False


def _ids_to_base64(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_JSON_DEPTH:
        raise OtlpFormatError("not a valid OTLP JSON request (nested too deeply)")
    if isinstance(value, dict):
        converted = {}
        for key, item in value.items():
            if key in _ID_HEX_LENGTHS and isinstance(item, str):
                if _is_base64_id(item, _ID_HEX_LENGTHS[key] // 2):
                    converted[key] = item  # protobuf's own JSON mapping (`MessageToJson`): already base64
                    continue
                if item and len(item) != _ID_HEX_LENGTHS[key]:
                    raise OtlpFormatError(
                        f"{key} must be {_ID_HEX_LENGTHS[key]} hex characters, got {item[:40]!r}"
                    )
                try:
                    converted[key] = base64.b64encode(bytes.fromhex(item)).decode() if item else ""
                except ValueError:
                    raise OtlpFormatError(f"{key} is not hex: {item[:40]!r}") from None
            else:
                converted[key] = _ids_to_base64(item, depth + 1)
        return converted
    if isinstance(value, list):
        return [_ids_to_base64(item, depth + 1) for item in value]
    return value


def hex_ids(value: Any) -> Any:
    """Protobuf's JSON (`MessageToDict`: ids in base64) as OTLP/JSON, ids in hex, as the
    collector's file exporter writes it and `otel-perf analyze` reads it."""
    if isinstance(value, dict):
        return {
            key: base64.b64decode(item).hex()
            if key in _ID_HEX_LENGTHS and isinstance(item, str)
            else hex_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [hex_ids(item) for item in value]
    return value


def parse_json(payload: bytes | str) -> dict[str, Any]:
    """The JSON object of an OTLP/JSON payload."""
    try:
        document = json.loads(payload)
    except json.JSONDecodeError as error:
        what = error.msg.removesuffix(" at")  # "Unterminated string starting at"
        raise OtlpFormatError(f"not JSON ({what} at column {error.colno})") from None
    except UnicodeDecodeError:
        raise OtlpFormatError("not JSON (not UTF-8)") from None
    except RecursionError:
        raise OtlpFormatError("not JSON (nested too deeply)") from None
    except ValueError:  # json.loads' only other ValueError: an integer longer than Python reads
        raise OtlpFormatError("not JSON (a number of more than 4300 digits)") from None
    if not isinstance(document, dict):
        raise OtlpFormatError("not an OTLP JSON object")
    return document


def message_from_json(document: dict[str, Any], message: MessageT) -> MessageT:
    """Fill `message` from a parsed OTLP/JSON object (hex ids, or protobuf JSON's base64 ones)."""
    converted = _ids_to_base64(document)
    try:
        return ParseDict(converted, message, ignore_unknown_fields=True)
    # What the parser raises on hostile input goes beyond its documented ParseError: TypeError and
    # ValueError on values of the wrong type, RecursionError, and SystemError from upb on a lone
    # surrogate ("\ud800") where an enum name goes. Each means this document is no request.
    except (ParseError, binascii.Error, TypeError, ValueError, RecursionError, SystemError) as error:
        name = message.DESCRIPTOR.name
        raise OtlpFormatError(_brief(f"not a valid OTLP JSON {name}: {error}")) from None


def decode_json(payload: bytes | str, message: MessageT) -> MessageT:
    return message_from_json(parse_json(payload), message)
