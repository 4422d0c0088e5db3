"""otel-perf as users really install it: `pip install .` (not editable) and then, as every
OpenTelemetry Python guide says, `opentelemetry-bootstrap -a install`, which adds the database
drivers' instrumentations (sqlite3, dbapi, psycopg, asyncpg, …) next to SQLAlchemy's. Each query
then has two spans; each N+1 must still be found once. And the app runs from the repository root
(where `opentelemetry-instrument` puts the source folder `otel_perf/` first on the path) exactly
as from anywhere else."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.apps import by_operation, drive_shop
from tests.support.venvs import REPO, user_venv
from tests.test_shop_in_process import _expected_arrived, assert_no_literals, assert_shop_findings

CONSOLE_EXPORT = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
}


@pytest.fixture(scope="module")
def bootstrapped() -> str:
    """The python of an environment after `pip install .` and `opentelemetry-bootstrap -a install`."""
    return str(user_venv("bootstrap", bootstrap=True) / "python")


def _assert_found_once(alerts: list[dict]) -> None:
    # (A slow revenue request, on a loaded machine, is a second slow_span of that operation: its kind
    # tells it from the slow query.)
    per_finding = Counter(
        (alert["type"], alert["operation"], alert["details"].get("span_kind")) for alert in alerts
    )
    assert all(count == 1 for count in per_finding.values()), per_finding


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_n_plus_ones_are_found_once_with_driver_instrumentations(
    launch, bootstrapped, database, request
) -> None:
    env = {}
    if database == "postgresql":
        env["DATABASE_URL"] = request.getfixturevalue("postgres").url
    app = launch("instrument", python=bootstrapped, env=env, export=CONSOLE_EXPORT)
    drive_shop(app)
    app.wait_for_alerts(_expected_arrived)
    alerts = app.settle()
    # The driver's instrumentation really traced each query a second time (sqlite3 / psycopg span
    # names are the bare operation, SQLAlchemy's name the database too)...
    driver_span = '"name": "SELECT",'
    assert app.log().count(driver_span) >= 25, "no driver spans: opentelemetry-bootstrap changed nothing"
    # ...and still: the same findings as without them, each once, with all 25 repeats, not 50.
    assert_shop_findings(alerts, db_system=database)
    _assert_found_once(alerts)
    assert by_operation(alerts, "n_plus_one")["GET /orders"]["details"]["count"] == 25
    assert_no_literals(app.alerts_file.read_text())


def test_the_app_runs_from_the_repository_root_as_from_anywhere(launch, bootstrapped, tmp_path) -> None:
    """`opentelemetry-instrument` puts the working directory first on PYTHONPATH: from the root of a
    clone, `otel_perf` is the source folder, which must import as the installed package does."""
    workdir = tmp_path / "shop"
    app = launch(
        "instrument",
        python=bootstrapped,
        workdir=workdir,
        cwd=REPO,
        env={"DATABASE_URL": f"sqlite:///{workdir / 'shop.db'}"},
    )
    drive_shop(app)
    app.wait_for_alerts(_expected_arrived)
    assert_shop_findings(app.settle())
    assert "Traceback" not in app.log()
    assert not (REPO / "demo-shop.db").exists()
