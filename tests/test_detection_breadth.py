"""Detection breadth on a real app (tests/apps/breadth.py under `opentelemetry-instrument`, uvicorn,
SQLAlchemy sync and async on SQLite and PostgreSQL, a real Redis server, httpx calls to itself):
concurrent N+1s, M+N loops (a resolver per item, an HTTP call and a query per item), consecutive
independent queries and HTTP calls, Redis N+1s, a loop that takes a connection per query, and work
outside any request (start-up, a background job, a bare query in a thread); each pattern with its
healthy twin, which must stay silent. Alerts are read from the file sink.

The same expectations hold on the analyzer host: tests/e2e/test_detection_breadth_pipeline.py.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.apps import RunningApp, start_app
from tests.support.redis import Redis

APP = Path(__file__).parent / "apps" / "breadth.py"
SERVICE = "breadth"
Alert = dict[str, Any]

POSITIVE = [
    "/concurrent/db",
    "/concurrent/http",
    "/resolver/books",
    "/mixed/prices",
    "/consecutive/db",
    "/consecutive/http",
    "/cache/sync",
    "/cache/async",
    "/connections/loop",
    "/api/authors/6/names",
]
NEGATIVE = [
    "/concurrent/db-few",
    "/concurrent/http-few",
    "/resolver/books-few",
    "/consecutive/db-concurrent",
    "/consecutive/db-chain",
    "/cache/mget",
    "/healthy/eager",
    "/healthy/single",
    "/healthz",
]
JOBS = ["/jobs/nightly-report", "/jobs/bare-query"]
# What may be reported at all: operation -> the alert types it may carry. Anything else is a false
# positive (the endpoints the app calls on itself, the job starters and every negative included).
ALLOWED = {
    "GET /concurrent/db": {"n_plus_one"},
    "GET /concurrent/http": {"n_plus_one"},
    "GET /resolver/books": {"mn_plus_one"},
    "GET /mixed/prices": {"mn_plus_one"},
    "GET /consecutive/db": {"consecutive_calls"},
    "GET /consecutive/http": {"consecutive_calls", "slow_span"},  # ~470 ms: near the request threshold
    "GET /cache/sync": {"n_plus_one"},
    "GET /cache/async": {"n_plus_one"},
    "GET /connections/loop": {"n_plus_one"},
    "GET /api/authors/{count}/names": {"n_plus_one"},
    "nightly-report": {"n_plus_one"},
    "startup": {"n_plus_one", "slow_span", "mn_plus_one", "consecutive_calls"},
    "background": {"slow_span"},
}
CONTRACT_FIELDS = {
    "type",
    "severity",
    "service",
    "operation",
    "trace_id",
    "span_ids",
    "fingerprint",
    "title",
    "details",
}


# --- running the app ------------------------------------------------------------------------------


def launch_breadth(
    workdir: Path,
    redis_url: str,
    database_url: str | None = None,
    *,
    export: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> RunningApp:
    """tests/apps/breadth.py as the user's main.py, under `opentelemetry-instrument`."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(APP, workdir / "main.py")
    full_env = {"OTEL_SERVICE_NAME": SERVICE, "REDIS_URL": redis_url, **(env or {})}
    if database_url is not None:  # PostgreSQL: psycopg for the sync engine, asyncpg for the async one
        full_env["DATABASE_URL"] = database_url
        full_env["ASYNC_DATABASE_URL"] = database_url.replace("+psycopg", "+asyncpg")
    return start_app(
        workdir, "instrument", env=full_env, export=export, seed=False, command=[sys.executable, "main.py"]
    )


def drive(app: RunningApp, paths: Sequence[str]) -> None:
    for path in paths:
        app.get(path)


def quiesce(
    read: Callable[[], list[Alert]], minimum: float = 2.5, stable: float = 2.0, limit: float = 30
) -> list[Alert]:
    """The alerts once nothing new arrived for `stable` seconds (and at least `minimum` passed): the
    traces' grace, the analysis worker, the background jobs' threads. Absences are asserted on this."""
    started = time.monotonic()
    alerts, last_change = read(), started
    while time.monotonic() - started < limit:
        time.sleep(0.25)
        now = read()
        if len(now) != len(alerts):
            alerts, last_change = now, time.monotonic()
        elif time.monotonic() - started >= minimum and time.monotonic() - last_change >= stable:
            break
    return read()


# --- expectations, shared with the analyzer host ----------------------------------------------------


def of(alerts: list[Alert], operation: str, alert_type: str | None = None) -> list[Alert]:
    return [
        a for a in alerts if a["operation"] == operation and (alert_type is None or a["type"] == alert_type)
    ]


def show(alerts: list[Alert]) -> str:
    return json.dumps(
        [{k: a.get(k) for k in ("type", "operation", "title", "details")} for a in alerts], indent=1
    )


def one(alerts: list[Alert], operation: str, alert_type: str) -> dict[str, Any]:
    """The details of the one `alert_type` alert of `operation`, with nothing else of other types
    allowed there (a request-level slow_span only where ALLOWED says so)."""
    mine = [a for a in of(alerts, operation) if not _tolerated(a)]
    found = [a for a in mine if a["type"] == alert_type]
    assert len(found) == 1, f"{operation}: expected one {alert_type}, got:\n{show(mine)}"
    others = [a for a in mine if a["type"] != alert_type]
    assert not others, f"{operation}: only {alert_type} expected, also got:\n{show(others)}"
    details: dict[str, Any] = found[0]["details"]
    return details


def _tolerated(alert: Alert) -> bool:
    return (
        alert["type"] == "slow_span"
        and alert["details"].get("span_kind") == "server"
        and alert["type"] in ALLOWED.get(alert["operation"], set())
    )


def silent(alerts: list[Alert], *paths: str) -> None:
    for path in paths:
        found = of(alerts, f"GET {path}")
        assert not found, f"GET {path} must stay silent, got:\n{show(found)}"


def check_negatives_silent(alerts: list[Alert]) -> None:
    """Every negative and healthy endpoint, the job starters and what the app calls on itself."""
    silent(alerts, *NEGATIVE, *JOBS)
    silent(alerts, "/catalog/items/{item_id}", "/catalog/prices/{item_id}", "/upstream/{name}")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def check_concurrent_db(alerts: list[Alert]) -> None:
    details = one(alerts, "GET /concurrent/db", "n_plus_one")
    assert details["kind"] == "db" and details["count"] == 8, details
    assert details["concurrent"] is True, details
    assert isinstance(details.get("saved_ms"), (int, float)) and details["saved_ms"] > 0, details
    assert "breadth_authors" in details["statement"], details
    silent(alerts, "/concurrent/db-few")


def check_concurrent_http(alerts: list[Alert]) -> None:
    details = one(alerts, "GET /concurrent/http", "n_plus_one")
    assert details["kind"] == "http" and details["count"] == 10, details
    assert details["concurrent"] is True, details
    assert details["url_template"].endswith("/catalog/items/{id}"), details
    assert isinstance(details.get("saved_ms"), (int, float)) and details["saved_ms"] > 0, details
    silent(alerts, "/concurrent/http-few")


def check_concurrent(alerts: list[Alert]) -> None:
    check_concurrent_db(alerts)
    check_concurrent_http(alerts)


def check_mn_plus_one(alerts: list[Alert], operation: str, repeats: int, parts: Sequence[str]) -> None:
    """One mn_plus_one whose pattern is one template per part (in this order); its calls are not
    also reported as n_plus_one."""
    n_plus_one = of(alerts, operation, "n_plus_one")
    assert not n_plus_one, (
        f"{operation}: the calls of an M+N loop reported as N+1 as well:\n{show(n_plus_one)}"
    )
    details = one(alerts, operation, "mn_plus_one")
    assert details["repeats"] == repeats, details
    pattern = [_text(call) for call in details["pattern"]]
    assert len(pattern) == len(parts), details
    for part in parts:
        assert any(part in call for call in pattern), f"{part!r} not in the pattern {pattern}"
    assert details["total_duration_ms"] > 0, details


def check_resolver(alerts: list[Alert]) -> None:
    check_mn_plus_one(
        alerts,
        "GET /resolver/books",
        10,
        ["FROM breadth_authors", "FROM breadth_reviews", "FROM breadth_tags"],
    )
    silent(alerts, "/resolver/books-few")


def check_mixed(alerts: list[Alert]) -> None:
    check_mn_plus_one(alerts, "GET /mixed/prices", 6, ["/catalog/prices/{id}", "FROM breadth_books"])


def check_consecutive_db(alerts: list[Alert]) -> None:
    details = one(alerts, "GET /consecutive/db", "consecutive_calls")
    assert details["kind"] == "db" and details["count"] == 3, details
    calls = [_text(call) for call in details["calls"]]
    assert len(calls) == 3, details
    for table in ("breadth_authors", "breadth_reviews", "breadth_tags"):
        assert any(f"FROM {table}" in call for call in calls), f"{table} not in {calls}"
    assert "0.06" not in json.dumps(details), "a literal reached the alert"
    # 3 x 60 ms one after another against 60 ms together.
    assert 100 <= details["saved_ms"] < 1000, details
    silent(alerts, "/consecutive/db-concurrent", "/consecutive/db-chain")


def check_consecutive_http(alerts: list[Alert]) -> None:
    details = one(alerts, "GET /consecutive/http", "consecutive_calls")
    assert details["kind"] == "http" and details["count"] == 3, details
    calls = [_text(call) for call in details["calls"]]
    assert len(calls) == 3, details
    for name in ("inventory", "pricing", "shipping"):
        assert any(f"/upstream/{name}" in call for call in calls), f"/upstream/{name} not in {calls}"
    assert 200 <= details["saved_ms"] < 2000, details  # 3 x 150 ms against 150 ms


def check_cache(alerts: list[Alert], path: str) -> None:
    details = one(alerts, f"GET {path}", "n_plus_one")
    assert details["kind"] == "cache" and details["count"] == 10, details
    assert details["concurrent"] is False, details
    statement = details["statement"]
    # The Redis instrumentation records `GET ?` (it never puts arguments on the span); a detector that
    # sees the key names it `GET authors:?`. Never an id.
    assert statement.split()[0] == "GET" and statement in {"GET ?", "GET authors:?"}, details


def check_redis(alerts: list[Alert]) -> None:
    check_cache(alerts, "/cache/sync")
    check_cache(alerts, "/cache/async")
    silent(alerts, "/cache/mget")


def check_connections_loop(alerts: list[Alert]) -> None:
    details = one(alerts, "GET /connections/loop", "n_plus_one")
    assert details["kind"] == "db" and details["count"] == 8 and details["concurrent"] is False, details
    assert "breadth_authors" in details["statement"], details


def check_no_connect_findings(alerts: list[Alert]) -> None:
    """SQLAlchemy's `connect` span (one per `engine.connect()`, per session's connection, per
    async session) is not a call to repeat."""
    about_connect = [
        a for a in alerts if re.search(r"\bconnect\b", f"{a['title']} {a['details'].get('statement', '')}")
    ]
    assert not about_connect, show(about_connect)


def check_connections(alerts: list[Alert]) -> None:
    check_connections_loop(alerts)
    check_no_connect_findings(alerts)


def check_mounted_sub_app(alerts: list[Alert]) -> None:
    """`app.mount("/api", api)`: filed under the mount's route and the sub-app's together."""
    details = one(alerts, "GET /api/authors/{count}/names", "n_plus_one")
    assert details["kind"] == "db" and details["count"] == 6, details
    assert not of(alerts, "GET /api"), show(alerts)


def check_nightly_report(alerts: list[Alert]) -> None:
    details = one(alerts, "nightly-report", "n_plus_one")
    assert details["kind"] == "db" and details["count"] == 10 and details["concurrent"] is False, details
    assert "breadth_authors" in details["statement"], details


def check_outside_requests(alerts: list[Alert]) -> None:
    """Start-up (DDL, seed, a 250 ms warm-up query before the first request) is filed as `startup`;
    a bare slow query in a thread of its own after it as `background`."""
    # Start-up: DDL, seed and a 250 ms warm-up query, before the first request.
    by_span_name = [
        a for a in alerts if re.match(r"(SELECT|INSERT|CREATE|DROP|PRAGMA|BEGIN|connect)\b", a["operation"])
    ]
    assert not by_span_name, f"filed under a span name, not an entry point:\n{show(by_span_name)}"
    warm_up = [
        a
        for a in alerts
        if a["type"] == "slow_span" and "FROM breadth_books" in str(a["details"].get("statement"))
    ]
    assert [a["operation"] for a in warm_up] == ["startup"], show(warm_up)
    ddl = [a for a in alerts if re.match(r"(CREATE|DROP|INSERT)\b", str(a["details"].get("statement", "")))]
    assert {a["operation"] for a in ddl} <= {"startup"}, show(ddl)
    # After the first request: a bare slow query in a thread of its own.
    bare = [
        a
        for a in alerts
        if a["type"] == "slow_span" and "FROM breadth_reviews" in str(a["details"].get("statement"))
    ]
    assert [a["operation"] for a in bare] == ["background"], show(bare)


def check_only_allowed(alerts: list[Alert]) -> None:
    unexpected = [a for a in alerts if a["type"] not in ALLOWED.get(a["operation"], set())]
    assert not unexpected, f"reported where nothing should be:\n{show(unexpected)}"


def check_contract(alerts: list[Alert]) -> None:
    for alert in alerts:
        assert alert.keys() >= CONTRACT_FIELDS, alert
        assert alert["service"] == SERVICE, alert
        details = alert["details"]
        if alert["type"] == "n_plus_one":
            assert details["kind"] in {"db", "http", "cache"}, details
            assert isinstance(details.get("concurrent"), bool), (
                f"n_plus_one without a concurrent flag: {details}"
            )
            if details["concurrent"]:
                assert isinstance(details.get("saved_ms"), (int, float)), details
        if alert["type"] == "consecutive_calls":
            assert details["kind"] in {"db", "http"}, details
    text = json.dumps(alerts)
    for literal in ("authors:1", "authors:10", "author 3", "/catalog/items/7", "/catalog/prices/4"):
        assert literal not in text, f"literal {literal!r} leaked into an alert"


# --- the in-process host -------------------------------------------------------------------------


@dataclass
class Run:
    app: RunningApp
    alerts: list[Alert]
    database: str


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    server = Redis.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def breadth(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_server: Redis
) -> Iterator[Run]:
    """The app on one database, every endpoint requested once, the alerts once analysis settled."""
    database_url = request.getfixturevalue("postgres").url if request.param == "postgresql" else None
    app = launch_breadth(
        tmp_path_factory.mktemp(f"breadth-{request.param}"),
        redis_server.url,
        database_url,
        env={"OTEL_PERF_ANALYSIS_CPU_SHARE": "1"},
    )
    try:
        drive(app, [*POSITIVE, *NEGATIVE, *JOBS])
        alerts = quiesce(app.alerts)
        yield Run(app, alerts, request.param)
    finally:
        app.stop()


def test_concurrent_fan_outs_are_n_plus_one_marked_concurrent(breadth: Run) -> None:
    check_concurrent(breadth.alerts)


def test_resolver_loop_is_one_mn_plus_one(breadth: Run) -> None:
    check_resolver(breadth.alerts)


def test_http_call_and_query_per_item_is_one_mn_plus_one(breadth: Run) -> None:
    check_mixed(breadth.alerts)


def test_consecutive_independent_queries(breadth: Run) -> None:
    check_consecutive_db(breadth.alerts)


def test_consecutive_independent_http_calls(breadth: Run) -> None:
    check_consecutive_http(breadth.alerts)


def test_redis_loops_are_cache_n_plus_one(breadth: Run) -> None:
    check_redis(breadth.alerts)


def test_connection_per_query_is_one_n_plus_one_and_no_connect_finding(breadth: Run) -> None:
    check_connections(breadth.alerts)


def test_a_mounted_sub_application_is_filed_under_its_whole_route(breadth: Run) -> None:
    check_mounted_sub_app(breadth.alerts)


def test_background_job_is_filed_under_its_root_span(breadth: Run) -> None:
    check_nightly_report(breadth.alerts)


def test_work_outside_requests_is_filed_as_startup_or_background(breadth: Run) -> None:
    check_outside_requests(breadth.alerts)


def test_healthy_endpoints_and_negatives_are_silent(breadth: Run) -> None:
    check_negatives_silent(breadth.alerts)


def test_nothing_else_is_reported(breadth: Run) -> None:
    check_only_allowed(breadth.alerts)


def test_alert_contract_and_no_literals(breadth: Run) -> None:
    check_contract(breadth.alerts)
    # One alert per finding: every endpoint was requested once.
    fingerprints = [alert["fingerprint"] for alert in breadth.alerts]
    assert len(fingerprints) == len(set(fingerprints))
