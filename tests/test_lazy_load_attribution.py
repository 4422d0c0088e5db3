"""An N+1 from lazy loads names the line to change and the fix that fits, wherever the loads run:
in an async session (the ORM runs in a greenlet, away from the application's stack), through
`run_sync`, or while FastAPI serialises the endpoint's ORM objects after it returned; and the
suggested eager load fits the relationship (no joined load for a one-to-many or a GROUP BY)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.support.apps import by_operation

APP = Path(__file__).parent / "apps" / "lazy_loads.py"
ENDPOINTS = [
    "/sync/customers",
    "/sync/grouped",
    "/async/awaitable",
    "/async/run-sync",
    "/sync/serialized",
    "/async/serialized",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def lazy_app(request, launch, tmp_path):
    workdir = tmp_path / "lazy"
    workdir.mkdir()
    shutil.copy(APP, workdir / "main.py")
    env = {"OTEL_PERF_ANALYSIS_CPU_SHARE": "1"}
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").url  # postgresql+psycopg://…
        env["DATABASE_URL"] = url
        env["ASYNC_DATABASE_URL"] = url.replace("+psycopg", "+asyncpg")
    return launch("instrument", workdir=workdir, command=[sys.executable, "main.py"], seed=False, env=env)


def test_lazy_loads_name_their_line_and_a_fitting_fix(lazy_app) -> None:
    for path in ENDPOINTS:
        lazy_app.get(path)
    operations = {f"GET {path}" for path in ENDPOINTS}
    alerts = lazy_app.wait_for_alerts(lambda alerts: {alert["operation"] for alert in alerts} >= operations)
    found = {operation: alert["details"] for operation, alert in by_operation(alerts, "n_plus_one").items()}

    def check(path: str, relationship: str, direction: str, function: str, joined: bool) -> dict:
        details = found[f"GET {path}"]
        assert details["count"] == 8, details
        assert details["orm_relationship"] == relationship, details
        assert details["orm_direction"] == direction, details
        assert details["code_location"]["function"].startswith(function), details
        assert details["code_location"]["file"].endswith("main.py"), details
        assert f"selectinload({relationship})" in details["suggestion"]
        assert (f"joinedload({relationship})" in details["suggestion"]) is joined, details["suggestion"]
        return details

    # One-to-many: a joined load would multiply the customer rows; selectinload only.
    check("/sync/customers", "Customer.orders", "one_to_many", "sync_customers", joined=False)
    # Many-to-one, but the objects came from a GROUP BY query that a joined load would break.
    check("/sync/grouped", "Order.customer", "many_to_one", "sync_grouped", joined=False)
    # Async session: the application's coroutine is found beyond the greenlet boundary.
    check("/async/awaitable", "Order.customer", "many_to_one", "async_awaitable", joined=True)
    check("/async/run-sync", "Order.customer", "many_to_one", "_names", joined=True)
    # Serialisation after the endpoint returned: no application frame; the query that loaded the
    # objects (where the eager load goes) is named instead.
    serialised = {"/sync/serialized": "sync_serialized", "/async/serialized": "async_serialized"}
    for path, function in serialised.items():
        details = check(path, "Order.customer", "many_to_one", function, joined=True)
        assert details["code_location"]["role"] == "loaded the objects"
