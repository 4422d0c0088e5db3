"""MN+1 on hand-built trees: a repeated sequence of different calls is one finding, never hidden
and never reported again as N+1s of its parts."""

from __future__ import annotations

import json

from otel_perf.processors.analysis import analyze_tree, build_detectors
from otel_perf.processors.detectors.mn_plus_one import repetitions
from otel_perf.processors.findings import Finding
from tests.unit.builders import http_call, node, query, server, tree

AUTHOR = "SELECT * FROM authors WHERE id = {}"
REVIEWS = "SELECT * FROM reviews WHERE book_id = {}"
TAGS = "SELECT * FROM tags WHERE book_id = {}"


def analyse(*nodes) -> list[Finding]:
    return analyze_tree(tree(*nodes), build_detectors())


def resolver_loop(items: int, statements: list[str], each_ms: float = 2.0):
    root = server("POST /graphql", 0, 400)
    resolve = node("resolve books", 1, 390, parent=root)
    spans = [query("SELECT * FROM books LIMIT 10", 1, 2, resolve)]
    start = 3.0
    for item in range(items):
        for statement in statements:
            spans.append(query(statement.format(item), start, start + each_ms, resolve))
            start += each_ms + 0.2
    return root, resolve, spans


def test_a_resolver_running_three_queries_per_item_is_one_mn_plus_one() -> None:
    root, resolve, spans = resolver_loop(10, [AUTHOR, REVIEWS, TAGS])
    findings = analyse(root, resolve, spans)
    assert [finding.type for finding in findings] == ["mn_plus_one"]
    [finding] = findings
    assert finding.operation == "POST /graphql"
    assert finding.details["repeats"] == 10
    assert finding.details["pattern"] == [
        "SELECT * FROM authors WHERE id = ?",
        "SELECT * FROM reviews WHERE book_id = ?",
        "SELECT * FROM tags WHERE book_id = ?",
    ]
    assert len(finding.offending) == 30
    assert "DataLoader" in finding.details["suggestion"]
    assert finding.title.startswith("MN+1: 10× a sequence of 3 calls")


def test_an_http_call_and_a_query_per_item() -> None:
    root = server("GET /feed", 0, 300)
    spans = []
    for item in range(6):
        spans.append(
            http_call(f"http://ratings/api/ratings/{item + 100}", 1 + item * 20, 10 + item * 20, root)
        )
        spans.append(query(AUTHOR.format(item), 11 + item * 20, 14 + item * 20, root))
    [finding] = analyse(root, spans)
    assert finding.type == "mn_plus_one"
    assert finding.details["kinds"] == ["db", "http"]
    assert finding.details["pattern"][0] == "GET http://ratings/api/ratings/{id}"
    assert "100" not in json.dumps(finding.to_json())


def test_two_repeats_are_not_a_loop() -> None:
    root, resolve, spans = resolver_loop(2, [AUTHOR, REVIEWS, TAGS])
    assert analyse(root, resolve, spans) == []


def test_a_plain_n_plus_one_stays_an_n_plus_one() -> None:
    root, resolve, spans = resolver_loop(10, [AUTHOR])
    assert [finding.type for finding in analyse(root, resolve, spans)] == ["n_plus_one"]


def test_repetitions_prefer_the_shortest_sequence_and_skip_what_precedes_it() -> None:
    keys = [("db", "L")] + [("db", "A"), ("db", "B")] * 4 + [("db", "C")]
    [found] = list(repetitions(keys, min_repeats=3, max_length=8))
    assert (found.start, found.pattern, found.repeats) == (1, (("db", "A"), ("db", "B")), 4)
    assert list(repetitions([("db", "A")] * 9, min_repeats=3, max_length=8)) == []
