"""Unused eager loads, found in-process from SQLAlchemy's own events in a real FastAPI app under
`opentelemetry-instrument`: a `selectinload`, a `joinedload` and a `lazy="selectin"` relationship
that the request never reads are reported (sync and async sessions, SQLite and PostgreSQL) with the
relationship, the strategy, the query that loaded them (no literal) and the time it wasted; the same
loads read in the endpoint, for one object only, by FastAPI serialising the response, on some
requests only (never three in a row unread), or an empty collection that is read, are not."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.support.apps import by_operation

APP = Path(__file__).parent / "apps" / "eager_loads.py"
# path → (relationship, strategy) the alert names
UNUSED = {
    "/sync/selectin-unused": ("Order.items", "selectinload"),
    "/sync/joined-unused": ("Order.customer", "joinedload"),
    "/sync/default-unused": ("Supplier.contacts", 'lazy="selectin"'),
    "/async/selectin-unused": ("Order.items", "selectinload"),
    "/async/joined-unused": ("Order.customer", "joinedload"),
    "/async/default-unused": ("Supplier.contacts", 'lazy="selectin"'),
}
LOADED_TABLE = {
    "Order.items": "eager_items",
    "Order.customer": "eager_customers",
    "Supplier.contacts": "eager_contacts",
}
USED = [
    "/sync/selectin-used",
    "/sync/selectin-used-once",
    "/sync/joined-used",
    "/sync/default-used",
    "/sync/serialized",
    "/sync/empty-used",
    "/async/selectin-used",
    "/async/joined-used",
    "/async/default-used",
    "/async/serialized",
]
REQUESTS_IN_A_ROW = 3  # OTEL_PERF_UNUSED_EAGER_LOAD_MIN_REQUESTS' default


@pytest.fixture(params=["sqlite", "postgresql"])
def eager_app(request, launch, tmp_path):
    workdir = tmp_path / "eager"
    workdir.mkdir()
    shutil.copy(APP, workdir / "main.py")
    env = {"OTEL_PERF_ANALYSIS_CPU_SHARE": "1"}
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").url  # postgresql+psycopg://…
        env["DATABASE_URL"] = url
        env["ASYNC_DATABASE_URL"] = url.replace("+psycopg", "+asyncpg")
    return launch("instrument", workdir=workdir, command=[sys.executable, "main.py"], seed=False, env=env)


def test_unused_eager_loads_are_named_and_used_ones_are_not(eager_app) -> None:
    # An eager load is unused once three requests in a row left it unread (the default): each
    # path three times, the used ones too. The conditional read is read every other request.
    for _ in range(REQUESTS_IN_A_ROW):
        for path in [*UNUSED, *USED]:
            eager_app.get(path)
    for details in ("false", "true", "false", "false", "true", "false", "false"):
        eager_app.get(f"/sync/selectin-read-when-asked?details={details}")
    wanted = {f"GET {path}" for path in UNUSED}

    def unused_alerts(alerts: list[dict]) -> dict[str, dict]:
        return by_operation(alerts, "unused_eager_load")

    alerts = eager_app.wait_for_alerts(lambda alerts: unused_alerts(alerts).keys() >= wanted)
    # Analysis of every trace had time to finish: the used loads had their chance to be reported.
    alerts = eager_app.settle(1.5)
    found = unused_alerts(alerts)
    assert found.keys() == wanted, sorted(found)
    for path, (relationship, strategy) in UNUSED.items():
        alert = found[f"GET {path}"]
        details = alert["details"]
        assert details["relationship"] == relationship, details
        assert details["strategy"] == strategy, details
        assert details["kind"] == "db"
        assert alert["severity"] == "low", alert  # a local database: fast queries
        assert details["wasted_ms"] > 0
        assert details["wasted_ms_is_upper_bound"] is (strategy == "joinedload")
        assert details["statement"].startswith("SELECT"), details
        # The query that did the eager load: its own (selectin), or the parent's with the join.
        assert LOADED_TABLE[relationship] in details["statement"], details
        if strategy == "joinedload":
            assert "JOIN" in details["statement"].upper(), details
        assert relationship in details["suggestion"], details
        assert alert["span_ids"], alert
        # No literal of the app's queries reaches the alert.
        assert "secret" not in json.dumps(alert), alert
    # The loading query's line in the app, where there is one (sync endpoints iterate the result there).
    location = found["GET /sync/selectin-unused"]["details"]["code_location"]
    assert location["file"].endswith("main.py") and location["function"].startswith("sync_selectin_unused")
    assert "hook failed" not in eager_app.log(), eager_app.log()[-4000:]
    assert "Traceback" not in eager_app.log(), eager_app.log()[-4000:]
