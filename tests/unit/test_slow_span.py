"""Slow spans: per-kind thresholds, overrides with a documented precedence, severity by ratio."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from otel_perf.errors import SettingsError
from otel_perf.processors.detectors.slow_span import SlowSpanDetector, SlowSpanSettings
from otel_perf.processors.findings import Finding, Severity
from otel_perf.processors.tree import KIND_CLIENT, KIND_INTERNAL, KIND_PRODUCER
from tests.unit.builders import http_call, node, query, server, tree


def detect(*nodes, **settings) -> list[Finding]:
    return list(SlowSpanDetector(SlowSpanSettings(**settings)).detect(tree(*nodes)))


def threshold(span, **settings) -> float | None:
    return SlowSpanDetector(SlowSpanSettings(**settings)).threshold_ms(span)


ROOT = server("GET /orders/{id}", 0, 10)
DB = query("SELECT * FROM orders WHERE id = 5", 0, 1, ROOT)
HTTP = http_call("http://pay/charges/9", 0, 1, ROOT)
INTERNAL = node("compute", 0, 1, parent=ROOT)


def test_default_thresholds() -> None:
    assert threshold(DB) == 100
    assert threshold(ROOT) == 500
    assert threshold(HTTP) == 1000
    assert threshold(INTERNAL) is None  # internal spans are off by default
    assert threshold(INTERNAL, internal_ms=50) == 50
    assert threshold(node("send", 0, 1, kind=KIND_PRODUCER)) is None


@pytest.mark.parametrize(
    ("span", "duration_ms", "found"),
    [
        ("db", 100, False),
        ("db", 101, True),
        ("server", 500, False),
        ("server", 501, True),
        ("http", 999, False),
        ("http", 1001, True),
        ("internal", 10_000, False),
    ],
)
def test_only_spans_over_their_threshold_are_reported(span: str, duration_ms: float, found: bool) -> None:
    root = server("GET /x", 0, duration_ms)
    children = {
        "db": [query("SELECT 1", 0, duration_ms, root)],
        "http": [http_call("http://a/b", 0, duration_ms, root)],
        "internal": [node("work", 0, duration_ms, parent=root)],
        "server": [],
    }[span]
    server_ms = 500 if span == "server" else 10**9  # only the span under test can be slow
    findings = detect(root, children, server_ms=server_ms)
    assert bool(findings) is found
    if found:
        assert findings[0].details["duration_ms"] == pytest.approx(duration_ms)


@pytest.mark.parametrize(
    ("key", "applies"),
    [
        ("route:/orders/*", "root"),
        ("name:GET /orders/*", "root"),
        ("statement:SELECT * FROM orders*", "db"),
        ("db.system:postgres*", "db"),
        ("service:sho?", "all"),
    ],
)
def test_overrides_by_each_field(key: str, applies: str) -> None:
    overrides = {key: 7}
    for span, name in ((ROOT, "root"), (DB, "db"), (HTTP, "http")):
        expected_override = applies == "all" or applies == name
        assert (threshold(span, overrides=overrides) == 7) is expected_override, (key, name)


def test_override_precedence_route_name_statement_db_system_service() -> None:
    root = server("GET /analytics/daily", 0, 10)
    db = query("SELECT * FROM events", 0, 1, root)
    db.http_route = "/analytics/daily"  # give the DB span every field to see which override wins
    overrides = {
        "service:*": 5,
        "db.system:*": 4,
        "statement:SELECT*": 3,
        "name:*": 2,
        "route:/analytics/*": 1,
    }
    assert threshold(db, overrides=overrides) == 1
    del overrides["route:/analytics/*"]
    assert threshold(db, overrides=overrides) == 2
    del overrides["name:*"]
    assert threshold(db, overrides=overrides) == 3
    del overrides["statement:SELECT*"]
    assert threshold(db, overrides=overrides) == 4
    del overrides["db.system:*"]
    assert threshold(db, overrides=overrides) == 5
    assert threshold(root, overrides={"route:/analytics/*": 2000}) == 2000
    assert threshold(root, overrides={"route:/other/*": 2000}) == 500


def test_statement_override_matches_the_normalized_statement() -> None:
    db = query("SELECT * FROM reports WHERE day = '2024-01-01'", 0, 1, ROOT)
    assert threshold(db, overrides={"statement:SELECT * FROM reports WHERE day = ?": 900}) == 900


@pytest.mark.parametrize(
    ("duration_ms", "expected"),
    [
        (150, Severity.LOW),
        (199, Severity.LOW),
        (200, Severity.MEDIUM),
        (499, Severity.MEDIUM),
        (500, Severity.HIGH),
        (999, Severity.HIGH),
        (1000, Severity.CRITICAL),
        (5000, Severity.CRITICAL),
    ],
)
def test_severity_by_ratio(duration_ms: float, expected: Severity) -> None:
    root = server("GET /x", 0, 100_000)
    db = query("SELECT * FROM t WHERE id = 1", 0, duration_ms, root)
    [finding] = [f for f in detect(root, db, server_ms=10**6)]
    assert finding.severity == expected
    assert finding.details["threshold_ms"] == 100
    assert finding.details["ratio"] == pytest.approx(duration_ms / 100, abs=0.01)


def test_slow_endpoint_names_its_dominant_child_without_literals() -> None:
    root = server("GET /orders/{id}", 0, 1200)
    slow_query = query(
        "SELECT * FROM orders WHERE owner = 'alice@example.com' AND total > 99999", 100, 1100, root
    )
    quick = query("SELECT 1", 1100, 1101, root)
    findings = {f.details["span_kind"]: f for f in detect(root, slow_query, quick)}
    endpoint = findings["server"]
    assert endpoint.operation == "GET /orders/{id}"
    assert endpoint.details["route"] == "/orders/{id}"
    assert (
        endpoint.details["dominant_child"]["span_name"]
        == "SELECT * FROM orders WHERE owner = ? AND total > ?"
    )
    assert endpoint.details["dominant_child"]["share"] == pytest.approx(1000 / 1200, abs=0.001)
    db_finding = findings["client"]
    assert db_finding.details["statement"] == "SELECT * FROM orders WHERE owner = ? AND total > ?"
    for finding in findings.values():
        text = json.dumps(finding.to_json())
        assert "alice" not in text and "99999" not in text


def test_no_dominant_child_when_time_is_spread() -> None:
    root = server("GET /x", 0, 1000)
    children = [node(f"step{i}", i * 200, i * 200 + 150, parent=root) for i in range(5)]
    [finding] = detect(root, children)
    assert "dominant_child" not in finding.details


def test_slow_http_call_details_carry_the_template_only() -> None:
    root = server("GET /x", 0, 5000)
    call = http_call(
        "https://user:pw@pay.example.com/charges/12345?card=4111111111111111", 0, 3000, root, method="POST"
    )
    [finding] = [f for f in detect(root, call) if f.details["span_kind"] == "client"]
    assert finding.details["url_template"] == "https://pay.example.com/charges/{id}?card="
    text = json.dumps(finding.to_json())
    assert "4111" not in text and "12345" not in text and "pw@" not in text
    assert finding.severity == Severity.MEDIUM  # 3000 ms / 1000 ms


def test_fingerprint_stable_across_literals() -> None:
    def one(statement: str) -> str:
        root = server("GET /x", 0, 100)
        [finding] = detect(root, query(statement, 0, 300, root))
        return finding.fingerprint

    assert one("SELECT * FROM t WHERE id = 1") == one("SELECT * FROM t WHERE id = 2")
    assert one("SELECT * FROM t WHERE id = 1") != one("SELECT * FROM u WHERE id = 1")


@pytest.mark.parametrize(
    "overrides",
    [{"path:/x": 100}, {"route": 100}, {"route:": 100}, {"route:/x": 0}, {"route:/x": -5}],
)
def test_invalid_override_keys_are_rejected(overrides: dict) -> None:
    with pytest.raises(ValidationError) as raised:
        SlowSpanSettings(overrides=overrides)
    assert "override" in str(raised.value)
    assert next(iter(overrides)) in str(raised.value)


def test_invalid_override_from_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PERF_SLOW_SPAN_OVERRIDES", '{"path:/x": 100}')
    with pytest.raises(SettingsError, match="OTEL_PERF_SLOW_SPAN_OVERRIDES"):
        SlowSpanSettings.load(strict=True)
    monkeypatch.setenv("OTEL_PERF_SLOW_SPAN_OVERRIDES", '{"route:/analytics/*": 2000}')
    assert SlowSpanSettings.load(strict=True).overrides == {"route:/analytics/*": 2000}


def test_internal_spans_checked_when_enabled() -> None:
    root = server("GET /x", 0, 100)
    work = node("render", 0, 90, parent=root, kind=KIND_INTERNAL)
    assert detect(root, work) == []
    [finding] = detect(root, work, internal_ms=30)
    assert finding.details["span_kind"] == "internal"
    assert finding.severity == Severity.MEDIUM


def test_kind_client_without_url_or_db_is_not_checked() -> None:
    root = server("GET /x", 0, 100)
    grpc = node("grpc.Call", 0, 90_000, parent=root, kind=KIND_CLIENT)
    assert [f for f in detect(root, grpc) if f.details["span_name"] == "grpc.Call"] == []


def test_a_mounted_sub_applications_span_is_looked_through_for_the_dominant_child() -> None:
    outer = server("POST /api", 0, 800, attributes={"http.route": "/api"})
    inner = node("POST /users", 1, 799, parent=outer, attributes={"http.route": "/users"})
    hashing = node("bcrypt.hashpw", 2, 600, parent=inner)
    [finding] = SlowSpanDetector().detect(tree(outer, inner, hashing))
    assert finding.operation == "POST /api/users"
    assert finding.details["dominant_child"]["span_name"] == "bcrypt.hashpw"
