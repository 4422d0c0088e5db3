"""Every alert names a real entry point of its trace: fragments of a trace (a missing parent) raise
no alert filed under a placeholder or under a client span."""

from __future__ import annotations

from otel_perf.processors.analysis import analyze_tree, build_detectors
from otel_perf.processors.tree import KIND_CLIENT, MISSING_SPAN_NAME, TraceTree
from tests.unit.builders import http_call, loop, node, server

DETECTORS = build_detectors()


def _operations(*nodes) -> list[str]:
    flat = [each for item in nodes for each in (item if isinstance(item, list) else [item])]
    return [finding.operation for finding in analyze_tree(TraceTree(0xABC, flat), DETECTORS)]


def test_repeats_under_a_missing_parent_raise_no_alert() -> None:
    # The request span (id 999) is not in this fragment: its queries hang under a placeholder.
    missing = node("GET /orders", 0, 100)
    queries = loop(missing, [f"SELECT * FROM customers WHERE id = {i}" for i in range(10)])
    operations = _operations(queries)
    assert MISSING_SPAN_NAME not in operations
    assert operations == []


def test_a_slow_client_span_whose_parent_is_missing_is_not_an_operation() -> None:
    missing = node("GET /quote", 0, 3000)
    orphan = http_call("http://127.0.0.1:8000/price/7", 0, 2500, missing)
    assert orphan.kind == KIND_CLIENT
    assert _operations(orphan) == []


def test_a_fragment_entered_by_a_server_span_is_filed_under_it() -> None:
    # A server span with a remote parent (the app called over HTTP by another process) is an entry.
    caller = node("GET", 0, 100, kind=KIND_CLIENT)
    inner = server("GET /price/{id}", 1, 99, parent=caller)
    queries = loop(inner, [f"SELECT * FROM prices WHERE id = {i}" for i in range(10)])
    assert _operations(inner, queries) == ["GET /price/{id}"]


def test_the_whole_trace_still_alerts_under_its_root() -> None:
    root = server("GET /orders", 0, 100)
    queries = loop(root, [f"SELECT * FROM customers WHERE id = {i}" for i in range(10)])
    assert _operations(root, queries) == ["GET /orders"]
