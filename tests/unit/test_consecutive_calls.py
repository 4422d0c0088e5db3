"""Consecutive independent calls on hand-built trees: what could have run concurrently, and what
could not."""

from __future__ import annotations

import pytest

from otel_perf.processors.analysis import analyze_tree, build_detectors
from otel_perf.processors.detectors.calls import signature
from otel_perf.processors.detectors.consecutive import is_independent
from otel_perf.processors.findings import Finding
from tests.unit.builders import http_call, query, server, tree

AGGREGATES = [
    "SELECT count(*) FROM orders",
    "SELECT sum(total) FROM orders WHERE status = 'paid'",
    "SELECT avg(rating) FROM reviews",
]


def analyse(*nodes) -> list[Finding]:
    """The findings besides slow spans (a 700 ms request is one, and not the point here)."""
    return [
        finding for finding in analyze_tree(tree(*nodes), build_detectors()) if finding.type != "slow_span"
    ]


def in_a_row(root, statements: list[str], each_ms: float, start_ms: float = 1.0):
    return [
        query(statement, start_ms + i * (each_ms + 0.5), start_ms + i * (each_ms + 0.5) + each_ms, root)
        for i, statement in enumerate(statements)
    ]


def test_three_unrelated_aggregates_in_a_row_could_run_together() -> None:
    root = server("GET /dashboard", 0, 250)
    [finding] = analyse(root, in_a_row(root, AGGREGATES, 60))
    assert finding.type == "consecutive_calls"
    assert finding.details["kind"] == "db"
    assert finding.details["count"] == 3
    assert finding.details["saved_ms"] == pytest.approx(121, abs=0.5)  # 181 ms in a row, 60 ms together
    assert finding.details["calls"][1] == "SELECT sum(total) FROM orders WHERE status = ?"
    assert finding.severity.label == "medium"


def test_quick_queries_in_a_row_are_not_worth_it() -> None:
    root = server("GET /dashboard", 0, 50)
    assert analyse(root, in_a_row(root, AGGREGATES, 10)) == []


def test_a_chain_of_parameterised_queries_may_depend_on_each_other() -> None:
    root = server("GET /orders/{id}", 0, 250)
    chain = [
        "SELECT * FROM orders WHERE id = ?",
        "SELECT * FROM customers WHERE id = %s",
        "SELECT * FROM items WHERE order_id = :order_id",
    ]
    assert analyse(root, in_a_row(root, chain, 60)) == []


def test_the_same_queries_run_concurrently_are_fine() -> None:
    root = server("GET /dashboard", 0, 100)
    assert analyse(root, [query(statement, 1, 61, root) for statement in AGGREGATES]) == []


def test_sequential_gets_to_different_services() -> None:
    root = server("GET /profile", 0, 700)
    urls = ["http://users/api/me", "http://billing/api/plan", "http://prefs/api/settings"]
    calls = [http_call(url, 1 + i * 201, 201 + i * 201, root) for i, url in enumerate(urls)]
    [finding] = analyse(root, calls)
    assert finding.details["kind"] == "http"
    assert finding.details["saved_ms"] == pytest.approx(402, abs=1)


def test_writes_are_not_independent() -> None:
    root = server("POST /checkout", 0, 700)
    urls = ["http://stock/api/reserve", "http://payments/api/charge", "http://mail/api/send"]
    calls = [http_call(url, 1 + i * 201, 201 + i * 201, root, method="POST") for i, url in enumerate(urls)]
    assert analyse(root, calls) == []


@pytest.mark.parametrize(
    ("statement", "independent"),
    [
        ("SELECT count(*) FROM orders", True),
        ("SELECT * FROM items ORDER BY id LIMIT ? OFFSET ?", True),
        ("SELECT * FROM t WHERE note = 'what?' AND x::int > 1", True),
        ("SELECT * FROM t WHERE id = ?", False),
        ("SELECT * FROM t WHERE id = $1", False),
        ("SELECT * FROM t WHERE id = %(id)s", False),
        ("SELECT * FROM t WHERE id = :id", False),
        ("UPDATE t SET x = 1", False),
    ],
)
def test_independence_of_a_query(statement: str, independent: bool) -> None:
    root = server("GET /x", 0, 10)
    node = query(statement, 1, 2, root)
    key = signature(node)
    assert key is not None
    assert is_independent(node, key) is independent
