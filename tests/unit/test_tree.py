"""TraceTree: linking, ordering, the damage real traces contain, entry spans, linear cost."""

from __future__ import annotations

import random
import time
from collections import Counter

from otel_perf.processors.tree import KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, SpanNode, TraceTree
from tests.unit.builders import node, query, server


def span(
    span_id: int,
    parent_id: int | None,
    start: int = 0,
    *,
    kind: int = KIND_INTERNAL,
    service: str = "a",
    name: str | None = None,
) -> SpanNode:
    return SpanNode(span_id, parent_id, name or f"s{span_id}", kind, start, start + 10, service)


def assert_each_node_walked_once(tree: TraceTree, expected_ids: set[int]) -> None:
    walked = Counter(node.span_id for node in tree.walk())
    assert set(walked) == expected_ids
    assert all(count == 1 for count in walked.values()), walked


def test_children_sorted_by_start_and_walk_is_parents_first() -> None:
    root = span(1, None, 0)
    late, early, middle = span(2, 1, 300), span(3, 1, 100), span(4, 1, 200)
    grandchild = span(5, 3, 150)
    tree = TraceTree(7, [grandchild, late, root, early, middle])
    assert tree.root is root
    assert [child.span_id for child in root.children] == [3, 4, 2]
    assert [node.span_id for node in tree.walk()] == [1, 3, 5, 4, 2]
    assert grandchild.parent is early
    assert len(tree) == 5
    assert tree.trace_id_hex == "0" * 31 + "7"


def test_missing_parents_make_several_roots_ordered_by_start() -> None:
    orphan_late = span(2, 99, 500)
    real_root = span(1, None, 0)
    orphan_early = span(3, 98, 100)
    child = span(4, 2, 600)
    tree = TraceTree(1, [orphan_late, real_root, orphan_early, child])
    assert [root.span_id for root in tree.roots] == [1, 3, 2]
    assert tree.root is real_root
    assert orphan_late.parent is None
    assert child.parent is orphan_late
    assert_each_node_walked_once(tree, {1, 2, 3, 4})


def test_duplicate_span_ids_first_wins() -> None:
    root = span(1, None, 0)
    first = span(2, 1, 10, name="first")
    second = span(2, None, 20, name="second")
    tree = TraceTree(1, [root, first, second])
    assert tree.nodes[2] is first
    assert len(tree) == 2
    assert [node.name for node in tree.walk()] == ["s1", "first"]


def test_parent_cycle_is_broken_and_every_node_reached_once() -> None:
    # 2 → 3 → 4 → 2 is a cycle; 5 hangs below it; 1 is a proper root with child 6.
    nodes = [span(1, None, 0), span(2, 4, 10), span(3, 2, 20), span(4, 3, 30), span(5, 3, 40), span(6, 1, 5)]
    tree = TraceTree(1, nodes)
    assert_each_node_walked_once(tree, {1, 2, 3, 4, 5, 6})
    assert len(tree.roots) == 2
    assert tree.roots[0].span_id == 1
    # The cycle's entry became a root and the others still hang below it.
    cycle_root = tree.roots[1]
    assert cycle_root.parent is None and cycle_root.span_id in {2, 3, 4}


def test_two_cycles_and_a_long_cycle() -> None:
    size = 20_000
    nodes = [span(i, i - 1 if i > 1 else size, i) for i in range(1, size + 1)]  # one big ring
    nodes += [span(100_001, 100_002, 1), span(100_002, 100_001, 2)]  # a second, tiny ring
    started = time.perf_counter()
    tree = TraceTree(1, nodes)
    assert time.perf_counter() - started < 2
    assert_each_node_walked_once(tree, {node.span_id for node in nodes})
    assert len(tree.roots) == 2


def test_self_parent_is_a_root() -> None:
    lonely = span(5, 5, 0)
    child = span(6, 5, 1)
    tree = TraceTree(1, [lonely, child])
    assert tree.roots == [lonely]
    assert lonely.parent is None
    assert lonely.children == [child]
    assert_each_node_walked_once(tree, {5, 6})


def test_zero_parent_id_means_no_parent() -> None:
    node = span(1, 0, 0)
    assert node.parent_id is None
    assert TraceTree(1, [node]).roots == [node]


def test_end_before_start_is_clamped() -> None:
    node = SpanNode(1, None, "x", KIND_INTERNAL, 100, 50)
    assert node.duration_ns == 0


def test_entry_span_is_nearest_server_span_of_the_same_service() -> None:
    frontend = span(1, None, 0, kind=KIND_SERVER, service="web", name="GET /checkout")
    work = span(2, 1, 1, service="web")
    call = span(3, 2, 2, kind=KIND_CLIENT, service="web")
    backend = span(4, 3, 3, kind=KIND_SERVER, service="pay", name="POST /charge")
    backend_work = span(5, 4, 4, service="pay")
    backend_query = span(6, 5, 5, kind=KIND_CLIENT, service="pay")
    # A span of another service without a server span of its own: the service boundary is its entry.
    foreign = span(7, 3, 6, service="sidecar", name="sidecar work")
    foreign_child = span(8, 7, 7, service="sidecar")
    tree = TraceTree(1, [frontend, work, call, backend, backend_work, backend_query, foreign, foreign_child])
    assert tree.entry_span(work) is frontend
    assert tree.entry_span(call) is frontend
    assert tree.entry_span(backend) is backend
    assert tree.entry_span(backend_work) is backend
    assert tree.entry_span(backend_query) is backend
    assert tree.entry_span(foreign) is foreign
    assert tree.entry_span(foreign_child) is foreign


def test_nested_server_span_in_same_service_is_the_entry() -> None:
    outer = span(1, None, 0, kind=KIND_SERVER, name="outer")
    inner = span(2, 1, 1, kind=KIND_SERVER, name="inner")
    leaf = span(3, 2, 2)
    tree = TraceTree(1, [outer, inner, leaf])
    assert tree.entry_span(leaf) is inner


def test_rebuilding_a_tree_from_the_same_nodes_does_not_duplicate_children() -> None:
    nodes = [span(1, None, 0), span(2, 1, 1), span(3, 1, 2)]
    TraceTree(1, nodes)
    tree = TraceTree(1, nodes)
    assert len(tree.roots[0].children) == 2


def test_end_ns_is_the_latest_end() -> None:
    tree = TraceTree(1, [SpanNode(1, None, "r", 2, 0, 100), SpanNode(2, 1, "c", 3, 50, 400)])
    assert tree.end_ns() == 400
    assert TraceTree(1, []).end_ns() == 0
    assert TraceTree(1, []).root is None


N = 100_000


def test_deep_chain_is_linear_and_not_recursive() -> None:
    nodes = [span(i, i - 1 if i > 1 else None, i) for i in range(1, N + 1)]
    random.Random(1).shuffle(nodes)
    started = time.perf_counter()
    tree = TraceTree(1, nodes)
    walked = sum(1 for _ in tree.walk())
    deepest = tree.nodes[N]
    entry = tree.entry_span(deepest)
    elapsed = time.perf_counter() - started
    assert walked == N
    assert entry.span_id == 1
    assert elapsed < 3, f"{elapsed:.2f}s for a {N}-span chain"


def test_wide_tree_is_linear() -> None:
    rng = random.Random(2)
    nodes = [span(1, None, 0)] + [span(i, 1, rng.randint(1, 10**9)) for i in range(2, N + 1)]
    started = time.perf_counter()
    tree = TraceTree(1, nodes)
    starts = [child.start_ns for child in tree.root.children]
    walked = sum(1 for _ in tree.walk())
    elapsed = time.perf_counter() - started
    assert walked == N
    assert starts == sorted(starts)
    assert elapsed < 3, f"{elapsed:.2f}s for a {N}-span wide tree"


def test_a_big_bushy_trace_with_thousands_of_findings_stays_linear() -> None:
    """20k spans, each parent with 10 children of which 5 repeat a query: 2000 N+1 findings."""
    import time as _time

    from otel_perf.processors.analysis import analyze_tree, build_detectors

    nodes = [SpanNode(1, None, "GET /batch", 2, 0, 20_000 * 1_000_000, "svc")]
    for number in range(2, 20_001):
        child = SpanNode(
            number, (number - 2) // 10 + 1, "SELECT", 3, number * 1_000_000, number * 1_000_000 + 10, "svc"
        )
        if number % 2 == 0:
            child.statement, child.db_system = "SELECT * FROM t WHERE id = ?", "postgresql"
        nodes.append(child)
    started = _time.perf_counter()
    findings = analyze_tree(TraceTree(1, nodes), build_detectors())
    assert len([f for f in findings if f.type == "n_plus_one"]) == 2000
    assert _time.perf_counter() - started < 5  # quadratic would be minutes


def test_work_outside_any_request_is_filed_under_startup_or_background() -> None:
    from otel_perf.processors.detectors.base import operation_of
    from otel_perf.processors.tree import FirstRequests

    first_requests = FirstRequests()
    first_requests.saw("shop", 50 * 1_000_000)
    first_requests.saw("shop", 80 * 1_000_000)  # a later request does not move the first
    ddl = query("CREATE TABLE ./shop.db", 1, 30, None)
    assert TraceTree(1, [ddl], first_requests).operation(ddl) == "startup"
    poll = query("SELECT * FROM jobs WHERE due < ?", 60, 61, None)
    assert TraceTree(2, [poll], first_requests).operation(poll) == "background"
    assert TraceTree(3, [poll]).operation(poll) == "background"  # a host that keeps no record
    job = node("nightly-report", 100, 200)
    inner = query("SELECT * FROM orders", 101, 102, job)
    assert operation_of(TraceTree(4, [job, inner], first_requests), inner) == "nightly-report"
    request = server("GET /orders", 50, 60)
    inside = query("SELECT * FROM orders", 51, 52, request)
    assert operation_of(TraceTree(5, [request, inside], first_requests), inside) == "GET /orders"


def test_a_mounted_sub_application_is_filed_under_the_whole_route() -> None:
    """`app.mount("/api", api)`: the outer server span has the mount's route, the sub-app's internal
    span the real one (found on a public app, where every endpoint became `GET /api`)."""
    outer = server("GET /api", 0, 100, attributes={"http.route": "/api"})
    inner = node(
        "GET /articles/{slug}/comments",
        1,
        99,
        parent=outer,
        attributes={"http.route": "/articles/{slug}/comments", "http.request.method": "GET"},
    )
    send = node("GET /api http send", 98, 99, parent=inner)
    inside = query("SELECT * FROM comments WHERE article_id = ?", 2, 3, inner)
    trace = TraceTree(1, [outer, inner, send, inside])
    assert trace.operation(inside) == "GET /api/articles/{slug}/comments"
    assert trace.operation(inner) == "GET /api/articles/{slug}/comments"
    assert trace.operation(outer) == "GET /api/articles/{slug}/comments"  # a slow request, say
    plain = server("GET /orders", 0, 10)
    assert TraceTree(2, [plain, query("SELECT 1", 1, 2, plain)]).operation(plain) == "GET /orders"
