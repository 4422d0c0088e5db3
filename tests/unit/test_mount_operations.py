"""Requests behind a mounted sub-application (`app.mount("/api", api)`) as the analyzer's monitors
see them in OTLP: the whole route, mounts in mounts joined, like `TraceTree.operation`; a span of
another service or a loop of ids (a hostile request) joins nothing more."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_perf.processors.sources import ProtoSpan, node_from_proto, proto_operations
from otel_perf.processors.tree import TraceTree


def _span(span_id: int, parent: int | None, name: str, kind: int, route: str) -> Span:
    return Span(
        trace_id=b"\x01" * 16,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        kind=kind,
        start_time_unix_nano=1_000,
        end_time_unix_nano=2_000,
        attributes=[KeyValue(key="http.route", value=AnyValue(string_value=route))],
    )


def _spans(*spans: Span, service: str = "shop") -> list[ProtoSpan]:
    return [(span, service, None, "") for span in spans]


ROOT = _span(1, None, "GET /api", Span.SPAN_KIND_SERVER, "/api")


def test_a_request_behind_mounts_is_its_whole_route() -> None:
    spans = _spans(
        ROOT,
        _span(2, 1, "GET /v1", Span.SPAN_KIND_INTERNAL, "/v1"),
        _span(3, 2, "GET /books/{book_id}", Span.SPAN_KIND_INTERNAL, "/books/{book_id}"),
    )
    assert proto_operations(spans)(ROOT, "shop") == "GET /api/v1/books/{book_id}"


@pytest.mark.parametrize("routes", [["/articles/{slug}"], ["/"], ["/v1/", "/"], ["/v1", "/items/"]])
def test_the_same_rule_as_the_tree(routes: list[str]) -> None:
    spans = [ROOT]
    for number, route in enumerate(routes, 2):
        spans.append(_span(number, number - 1, f"GET {route}", Span.SPAN_KIND_INTERNAL, route))
    tree = TraceTree(1, [node_from_proto(span, "shop", None) for span in spans])
    (root,) = tree.roots
    assert proto_operations(_spans(*spans))(ROOT, "shop") == tree.operation(root)


def test_no_mount_and_another_service_leave_the_name() -> None:
    assert proto_operations(_spans(ROOT))(ROOT, "shop") == "GET /api"
    inner = _span(2, 1, "GET /articles", Span.SPAN_KIND_INTERNAL, "/articles")
    mixed = [(ROOT, "shop", None, ""), (inner, "other", None, "")]
    assert proto_operations(mixed)(ROOT, "shop") == "GET /api"


def test_a_loop_of_ids_ends() -> None:
    looping = _spans(
        ROOT,
        _span(2, 1, "GET /a", Span.SPAN_KIND_INTERNAL, "/a"),
        _span(1, 2, "GET /b", Span.SPAN_KIND_INTERNAL, "/b"),  # claims the root's id, under its child
    )
    name = proto_operations(looping)(ROOT, "shop")
    assert name.startswith("GET /api/a") and len(name) < 40
