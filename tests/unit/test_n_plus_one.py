"""N+1 detection on hand-built trees: what it must find, what it must not, and how it rates it."""

from __future__ import annotations

import json

import pytest

from otel_perf.processors.detectors.n_plus_one import NPlusOneDetector, NPlusOneSettings
from otel_perf.processors.findings import Finding, Severity
from otel_perf.processors.tree import KIND_CLIENT, KIND_SERVER, TraceTree
from tests.unit.builders import http_call, loop, node, query, server, tree


def detect(*nodes, trace_id: int = 0xABC, **settings) -> list[Finding]:
    detector = NPlusOneDetector(NPlusOneSettings(**settings))
    return list(detector.detect(tree(*nodes, trace_id=trace_id)))


def author_loop(
    count: int, *, root_ms: float = 100, each_ms: float = 1.0, first_id: int = 1, endpoint: str = "GET /books"
):
    root = server(endpoint, 0, root_ms)
    books = query("SELECT * FROM books LIMIT 50", 0.1, 0.5, root)
    authors = loop(
        root,
        [f"SELECT * FROM authors WHERE authors.id = {first_id + i}" for i in range(count)],
        each_ms=each_ms,
    )
    return root, books, authors


# --- true positives ---------------------------------------------------------------------------------


def test_repeated_query_is_an_n_plus_one() -> None:
    root, books, authors = author_loop(10)
    [finding] = detect(root, books, authors)
    assert finding.type == "n_plus_one"
    assert finding.operation == "GET /books"
    assert finding.service == "shop"
    assert finding.trace_id == f"{0xABC:032x}"
    assert finding.span_ids == [a.span_id_hex for a in authors]
    assert finding.offending == [a.span_id for a in authors]
    assert finding.parent_span_id == root.span_id
    details = finding.details
    assert details["kind"] == "db"
    assert details["count"] == 10
    assert details["statement"] == "SELECT * FROM authors WHERE authors.id = ?"
    assert details["parent_span"] == "GET /books"
    assert details["total_duration_ms"] == pytest.approx(10.0)
    assert details["db_system"] == "postgresql"
    assert "10×" in finding.title and "GET /books" in finding.title


def test_exactly_min_repeats_is_enough() -> None:
    root, books, authors = author_loop(5)
    assert len(detect(root, books, authors)) == 1
    root, books, authors = author_loop(3)
    assert len(detect(root, books, authors, min_repeats=3)) == 1


def test_interleaved_statements_each_repeated() -> None:
    root = server("GET /orders", 0, 100)
    statements = []
    for i in range(6):
        statements += [
            f"SELECT * FROM customers WHERE id = {i}",
            f"SELECT * FROM addresses WHERE owner = {i}",
        ]
    findings = detect(root, loop(root, statements))
    assert sorted(f.details["statement"] for f in findings) == [
        "SELECT * FROM addresses WHERE owner = ?",
        "SELECT * FROM customers WHERE id = ?",
    ]
    assert all(f.details["count"] == 6 for f in findings)
    assert findings[0].fingerprint != findings[1].fingerprint


def test_repeated_http_calls_with_ids_in_urls() -> None:
    root = server("GET /dashboard", 0, 200)
    calls = [
        http_call(f"http://users.internal:8000/users/{1000 + i}?token=sec{i}", 1 + i * 10, 9 + i * 10, root)
        for i in range(7)
    ]
    [finding] = detect(root, calls)
    assert finding.details["kind"] == "http"
    assert finding.details["count"] == 7
    assert finding.details["url_template"] == "http://users.internal:8000/users/{id}?token="
    assert finding.details["method"] == "GET"
    assert finding.details["parent_span"] == "GET /dashboard"
    assert "sec1" not in json.dumps(finding.to_json())


def test_nested_loop_under_internal_span_is_filed_under_the_endpoint() -> None:
    root = server("GET /report", 0, 100)
    service_call = node("build_report", 1, 90, parent=root)
    queries = loop(service_call, [f"SELECT x FROM y WHERE id = {i}" for i in range(5)], start_ms=2)
    [finding] = detect(root, service_call, queries)
    assert finding.operation == "GET /report"
    assert finding.details["parent_span"] == "build_report"


def test_repeats_with_only_db_system_are_grouped_by_name() -> None:
    root = server("GET /cache", 0, 50)
    gets = [
        node("GET", 1 + i, 1.5 + i, parent=root, kind=KIND_CLIENT, attributes={"db.system": "redis"})
        for i in range(6)
    ]
    [finding] = detect(root, gets)
    assert finding.details["kind"] == "cache"
    assert finding.details["count"] == 6


def test_a_cache_read_loop_is_its_own_kind_without_the_keys_ids() -> None:
    root = server("GET /authors", 0, 50)
    gets = [
        node(
            "GET",
            1 + i,
            1.5 + i,
            parent=root,
            kind=KIND_CLIENT,
            attributes={"db.system": "redis", "db.statement": f"GET authors:{1000 + i}"},
        )
        for i in range(8)
    ]
    [finding] = detect(root, gets)
    assert finding.details["kind"] == "cache"
    assert finding.details["statement"] == "GET authors:?"
    assert "MGET" in finding.details["suggestion"]
    assert finding.title.startswith("N+1 cache calls: 8× GET authors:?")
    assert "1000" not in json.dumps(finding.to_json())


def test_pool_checkouts_between_the_repeats_do_not_hide_the_loop() -> None:
    root = server("GET /stock", 0, 100)
    spans = []
    for i in range(8):
        spans.append(
            node(
                "connect",
                1 + i * 3,
                1.5 + i * 3,
                parent=root,
                kind=KIND_CLIENT,
                attributes={"db.system": "sqlite"},
            )
        )
        spans.append(query(f"SELECT qty FROM stock WHERE id = {i}", 1.6 + i * 3, 2.5 + i * 3, root))
        spans.append(node("serialize", 2.6 + i * 3, 2.9 + i * 3, parent=root))
    [finding] = detect(root, spans)
    assert finding.details["kind"] == "db"
    assert finding.details["count"] == 8
    assert "connect" not in finding.title


# --- true negatives ---------------------------------------------------------------------------------


def test_eager_loading_is_not_an_n_plus_one() -> None:
    root = server("GET /books", 0, 20)
    books = query("SELECT * FROM books LIMIT 50", 1, 2, root)
    authors = query("SELECT * FROM authors WHERE authors.id IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)", 3, 4, root)
    assert detect(root, books, authors) == []


def test_different_statements_are_not_an_n_plus_one() -> None:
    root = server("GET /home", 0, 50)
    tables = ["users", "orders", "items", "prices", "stock"]
    assert detect(root, loop(root, [f"SELECT * FROM {t} WHERE id = 1" for t in tables])) == []


def test_short_loop_below_min_repeats() -> None:
    root, books, authors = author_loop(4)
    assert detect(root, books, authors, min_repeats=5) == []


def test_a_concurrent_fan_out_is_a_concurrent_n_plus_one() -> None:
    root = server("GET /prices", 0, 50)
    parallel = [
        query(f"SELECT price FROM quotes WHERE sym = 'S{i}'", 1 + i * 0.1, 20 + i * 0.1, root)
        for i in range(8)
    ]
    [finding] = detect(root, parallel)
    assert finding.details["concurrent"] is True
    assert finding.title.startswith("N+1 concurrent queries: 8×")
    # One query instead of eight saves the other seven's work.
    assert finding.details["saved_ms"] == pytest.approx(7 * 19, abs=0.01)
    assert finding.details["wall_ms"] == pytest.approx(19.7, abs=0.01)
    calls = [http_call(f"http://quotes/q/{i}", 1, 30, root) for i in range(8)]
    [finding] = detect(root, calls)
    assert finding.details["concurrent"] is True
    assert "batch endpoint" in finding.details["suggestion"]


def test_a_loop_is_not_concurrent() -> None:
    root, books, authors = author_loop(10)
    [finding] = detect(root, books, authors)
    assert finding.details["concurrent"] is False


def test_a_little_overlap_is_still_sequential() -> None:
    root = server("GET /x", 0, 100)
    spans = loop(root, [f"SELECT * FROM t WHERE id = {i}" for i in range(11)], each_ms=1, gap_ms=0)
    spans[5].start_ns -= 500_000  # one of ten overlaps its predecessor: ≤ max_overlap (0.2)
    [finding] = detect(root, spans)
    assert finding.details["concurrent"] is False


def test_each_repeat_starting_just_before_the_previous_ended_is_still_a_loop() -> None:
    """An async driver (or clock skew) makes every repeat overlap its predecessor by 1 ms of 10."""
    root = server("GET /x", 0, 200)
    spans = [query(f"SELECT * FROM t WHERE id = {i}", 1 + i * 9, 11 + i * 9, root) for i in range(10)]
    [finding] = detect(root, spans)
    assert finding.details["concurrent"] is False


@pytest.mark.parametrize(
    "statement",
    ["BEGIN", "COMMIT", "SAVEPOINT sa_savepoint_1", "RELEASE SAVEPOINT sa_savepoint_1", "ROLLBACK"],
)
def test_transaction_control_repeats_are_not_an_n_plus_one(statement: str) -> None:
    root = server("POST /batch", 0, 100)
    assert detect(root, loop(root, [statement] * 8)) == []


def test_repeats_under_different_parents_are_not_grouped() -> None:
    root = server("GET /x", 0, 100)
    parents = [node(f"step{i}", i * 10, i * 10 + 9, parent=root) for i in range(6)]
    queries = [
        query("SELECT * FROM t WHERE id = 1", p.start_ns / 1e6 + 1, p.start_ns / 1e6 + 2, p) for p in parents
    ]
    assert detect(root, parents, queries) == []


def test_repeated_internal_work_is_not_an_n_plus_one() -> None:
    root = server("GET /x", 0, 100)
    work = [node("compute", i, i + 0.5, parent=root) for i in range(10)]
    assert detect(root, work) == []


# --- severity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "each_ms", "parent_ms", "expected"),
    [
        (25, 0.05, 5, Severity.LOW),
        (10, 5.0, 60, Severity.MEDIUM),
        (10, 4.9, 60, Severity.LOW),
        (10, 25.0, 300, Severity.HIGH),
        (10, 100.0, 1100, Severity.CRITICAL),
        (10, 150.0, 1600, Severity.CRITICAL),
    ],
)
def test_severity_grows_with_total_duration(
    count: int, each_ms: float, parent_ms: float, expected: Severity
) -> None:
    root = server("GET /s", 0, parent_ms)
    spans = loop(
        root,
        [f"SELECT * FROM t WHERE id = {i}" for i in range(count)],
        start_ms=0.01,
        each_ms=each_ms,
        gap_ms=0,
    )
    [finding] = detect(root, spans)
    assert finding.severity == expected
    assert finding.details["total_duration_ms"] == pytest.approx(count * each_ms, rel=1e-3)


@pytest.mark.parametrize(
    ("each_ms", "full", "lowered"),
    [
        (30.0, Severity.HIGH, Severity.MEDIUM),
        (110.0, Severity.CRITICAL, Severity.HIGH),
        (6.0, Severity.MEDIUM, Severity.LOW),
        (0.1, Severity.LOW, Severity.LOW),
    ],
)
def test_severity_drops_one_level_below_min_share(each_ms: float, full: Severity, lowered: Severity) -> None:
    total = 10 * each_ms
    for parent_ms, expected in ((total * 1.5, full), (total * 20, lowered)):
        root = server("GET /s", 0, parent_ms)
        spans = loop(
            root,
            [f"SELECT * FROM t WHERE id = {i}" for i in range(10)],
            start_ms=0.01,
            each_ms=each_ms,
            gap_ms=0,
        )
        [finding] = detect(root, spans)
        assert finding.severity == expected, (parent_ms, finding.details)


# --- fingerprint -------------------------------------------------------------------------------------


def test_fingerprint_is_stable_across_traces_literals_and_counts() -> None:
    first = detect(*author_loop(6, first_id=1), trace_id=1)[0]
    second = detect(*author_loop(23, first_id=5000, each_ms=3), trace_id=2)[0]
    assert first.fingerprint == second.fingerprint
    assert first.trace_id != second.trace_id
    other_endpoint = detect(*author_loop(6, endpoint="GET /library"), trace_id=3)[0]
    assert other_endpoint.fingerprint != first.fingerprint
    assert first.alert_name == second.alert_name


# --- ORM hints ----------------------------------------------------------------------------------------


def test_lazy_load_relationship_gives_selectinload_suggestion() -> None:
    root = server("GET /orders", 0, 100)
    spans = [
        query(
            f"SELECT * FROM customers WHERE customers.id = {i}",
            1 + i,
            1.5 + i,
            root,
            extra={"perf.orm.lazy_load": "Order.customer"},
        )
        for i in range(6)
    ]
    [finding] = detect(root, spans)
    assert finding.details["orm_relationship"] == "Order.customer"
    assert "selectinload(Order.customer)" in finding.details["suggestion"]
    assert "Order.customer" in finding.title


def test_common_code_location_reported() -> None:
    root = server("GET /orders", 0, 100)
    where = {"code.file.path": "/app/views.py", "code.line.number": 42, "code.function.name": "list_orders"}
    spans = [query(f"SELECT * FROM c WHERE id = {i}", 1 + i, 1.5 + i, root, extra=where) for i in range(6)]
    [finding] = detect(root, spans)
    assert finding.details["code_location"] == {
        "file": "/app/views.py",
        "line": 42,
        "function": "list_orders",
    }


# --- cross-service -------------------------------------------------------------------------------------

SLUGS = ["red-shirt", "blue-hat", "green-socks", "black-boots", "white-tee", "grey-scarf"]


def cross_service_trace(with_server_children: bool):
    root = server("GET /outfit", 0, 200)
    nodes = [root]
    for i, slug in enumerate(SLUGS):
        call = http_call(f"http://catalog:9000/products/{slug}", 1 + i * 20, 19 + i * 20, root)
        nodes.append(call)
        if with_server_children:
            handler = node(
                "GET /products/{slug}",
                2 + i * 20,
                18 + i * 20,
                parent=call,
                kind=KIND_SERVER,
                service="catalog",
                attributes={"http.route": "/products/{slug}"},
            )
            lookup = query(
                f"SELECT * FROM products WHERE slug = '{slug}'",
                3 + i * 20,
                10 + i * 20,
                handler,
                service="catalog",
            )
            nodes += [handler, lookup]
    return nodes


def test_cross_service_calls_grouped_by_callee_route() -> None:
    findings = detect(*cross_service_trace(with_server_children=True))
    assert len(findings) == 1, [f.title for f in findings]
    [finding] = findings
    assert finding.details["kind"] == "http"
    assert finding.details["count"] == len(SLUGS)
    assert finding.details["url_template"].endswith("/products/{slug}")
    assert finding.details["url_template"] == "http://catalog:9000/products/{slug}"
    assert finding.operation == "GET /outfit"
    downstream = finding.details["downstream"]
    assert {
        "service": "catalog",
        "statement": "SELECT * FROM products WHERE slug = ?",
        "count": 6,
    } in downstream
    text = json.dumps(finding.to_json())
    for slug in SLUGS:
        assert slug not in text


def test_cross_service_calls_without_server_children_are_not_grouped() -> None:
    assert detect(*cross_service_trace(with_server_children=False)) == []


def test_min_repeats_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="min_repeats"):
        NPlusOneSettings(min_repeats=1)
    with pytest.raises(ValueError, match="min_share"):
        NPlusOneSettings(min_share=2)


def test_siblings_whose_parent_never_arrived_still_show_the_loop() -> None:
    """The local root never ended (or was dropped): its children still are one loop."""
    missing_root = server("GET /orders", 0, 100)
    spans = [
        query(f"SELECT * FROM customers WHERE id = {i}", i * 2, i * 2 + 1, missing_root) for i in range(6)
    ]
    tree = TraceTree(1, spans)  # the root itself is absent
    (finding,) = list(NPlusOneDetector().detect(tree))
    assert finding.details["count"] == 6
    assert finding.details["statement"] == "SELECT * FROM customers WHERE id = ?"
    assert finding.offending == [span.span_id for span in spans]


def test_document_store_commands_on_different_collections_are_different_calls() -> None:
    """pymongo's statement is the bare command (`find`): the collection tells the calls apart."""
    root = server("GET /feed", 0, 50)

    def find(collection: str, at: float):
        attributes = {"db.system": "mongodb", "db.statement": "find", "db.mongodb.collection": collection}
        return node("find", at, at + 1, parent=root, kind=KIND_CLIENT, attributes=attributes)

    spans = [find("posts", 1)] + [find("authors", 3 + i * 2) for i in range(6)]
    [finding] = detect(root, spans)
    assert finding.details["count"] == 6
    assert finding.details["statement"] == "find authors"
