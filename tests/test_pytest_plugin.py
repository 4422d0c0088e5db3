"""The pytest plugin (`pytest --otel-perf`), in real inner pytest sessions (subprocesses, the plugin
loaded from its `pytest11` entry point as users get it) against small FastAPI + SQLAlchemy apps
whose engine and `FastAPI()` are created at import time, driven with TestClient and with httpx's
ASGITransport in async tests, on sync and async (aiosqlite) SQLAlchemy."""

from __future__ import annotations

import re
import textwrap

import pytest

pytest_plugins = ["pytester"]

# Created at import (engine, seed, app): the plugin must be in place before test modules and
# conftests import it.
SYNC_APP = """
from fastapi import FastAPI
from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload

engine = create_engine("sqlite:///shop.db", connect_args={"check_same_thread": False})


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    customer: Mapped[Customer] = relationship()


Base.metadata.drop_all(engine)
Base.metadata.create_all(engine)
with Session(engine) as session:
    session.add_all([Order(customer=Customer(name=f"customer {i}")) for i in range(10)])
    session.commit()

app = FastAPI()


@app.get("/orders")
def list_orders() -> list[str]:
    with Session(engine) as session:
        names = []
        for order in session.scalars(select(Order)).all():
            names.append(order.customer.name)  # N+1
        return names


@app.get("/orders/batched")
def list_orders_batched() -> list[str]:
    with Session(engine) as session:
        orders = session.scalars(select(Order).options(selectinload(Order.customer))).all()
        return [order.customer.name for order in orders]
"""

ASYNC_APP = """
import sqlite3

from fastapi import FastAPI
from sqlalchemy import ForeignKey, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

with sqlite3.connect("shop_async.db") as db:
    db.executescript(
        "DROP TABLE IF EXISTS orders; DROP TABLE IF EXISTS customers;"
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id));"
    )
    db.executemany("INSERT INTO customers VALUES (?, ?)", [(i, f"customer {i}") for i in range(10)])
    db.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i) for i in range(10)])

engine = create_async_engine("sqlite+aiosqlite:///shop_async.db")
Sessions = async_sessionmaker(engine)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))


app = FastAPI()


@app.get("/orders")
async def list_orders() -> list[str]:
    async with Sessions() as session:
        names = []
        for order in (await session.scalars(select(Order))).all():
            customer = await session.scalar(select(Customer).where(Customer.id == order.customer_id))  # N+1
            names.append(customer.name)
        return names
"""

# One per N+1 in a failure message.
N_PLUS_ONE_LINE = re.compile(r"^n_plus_one \((?:low|medium|high|critical)\) in GET /orders$", re.M)


def _n_plus_one_lines(out: str) -> int:
    """The N+1s the failure reports name, not counting the short summary: on a CI machine (`CI` set)
    pytest prints each failure's whole message there too."""
    failures = out.split("short test summary info", 1)[0]
    return len(N_PLUS_ONE_LINE.findall(failures))


TESTCLIENT_N_PLUS_ONE = """
from fastapi.testclient import TestClient

from app import app


def test_orders():
    response = TestClient(app).get("/orders")
    assert response.status_code == 200 and len(response.json()) == 10
"""


def _line_of(source: str, marker: str) -> int:
    """The line number, in the written file, of the line with `marker`."""
    lines = textwrap.dedent(source).splitlines()
    return next(number for number, line in enumerate(lines, 1) if marker in line)


def _write(pytester: pytest.Pytester, **files: str) -> None:
    for name, source in files.items():
        (pytester.path / name).write_text(textwrap.dedent(source), encoding="utf-8")


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=60)


def test_an_n_plus_one_under_testclient_fails_with_its_location_and_fix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sinks the environment configures for production: the plugin keeps its findings to itself.
    monkeypatch.setenv("OTEL_PERF_ALERTS_FILE", str(pytester.path / "alerts.jsonl"))
    monkeypatch.setenv("OTEL_PERF_ALERTS_CONSOLE", "true")
    _write(pytester, **{"app.py": SYNC_APP, "test_orders.py": TESTCLIENT_N_PLUS_ONE})
    result = _run(pytester, "--otel-perf")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    line = _line_of(SYNC_APP, "# N+1")
    assert "otel-perf: N+1 queries: 10× SELECT customers.id" in out
    # Rated by its impact: low on a fast local SQLite, higher on a loaded machine.
    assert _n_plus_one_lines(out) == 1
    assert f"at app.py:{line} in list_orders" in out
    assert "(Order.customer lazy load)" in out
    assert "fix: eager-load it:" in out and "selectinload(Order.customer)" in out
    assert "FAILED test_orders.py::test_orders - Failed: otel-perf: N+1" in out
    assert "otel-perf: tests fail on any N+1 in their requests (instrumented: SQLAlchemy, FastAPI)" in out
    assert not (pytester.path / "alerts.jsonl").exists()
    assert not re.search(
        r"otel-perf (LOW|MEDIUM|HIGH|CRITICAL) ", out + result.stderr.str()
    )  # the console sink's


def test_an_n_plus_one_through_asgi_transport_in_an_async_test_fails(pytester: pytest.Pytester) -> None:
    _write(
        pytester,
        **{
            "app.py": SYNC_APP,
            # As on a core install (no rich): the findings in plain lines instead of the table.
            "conftest.py": """
                import sys

                sys.modules["rich.console"] = None
            """,
            "test_orders.py": """
                import httpx
                import pytest

                from app import app


                @pytest.mark.anyio
                async def test_orders():
                    transport = httpx.ASGITransport(app=app)
                    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
                        response = await client.get("/orders")
                    assert response.status_code == 200 and len(response.json()) == 10
            """,
        },
    )
    result = _run(pytester, "--otel-perf")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "otel-perf: N+1 queries: 10× SELECT customers.id" in out
    assert f"at app.py:{_line_of(SYNC_APP, '# N+1')} in list_orders" in out
    assert "  fix: eager-load it: .options(selectinload(Order.customer))" in out
    assert "otel-perf findings" not in out


def test_an_async_sqlalchemy_n_plus_one_fails(pytester: pytest.Pytester) -> None:
    _write(
        pytester,
        **{
            "aapp.py": ASYNC_APP,
            "test_orders.py": """
                import httpx
                import pytest

                from aapp import app


                @pytest.mark.anyio
                async def test_orders():
                    transport = httpx.ASGITransport(app=app)
                    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
                        response = await client.get("/orders")
                    assert response.status_code == 200 and len(response.json()) == 10
            """,
        },
    )
    result = _run(pytester, "--otel-perf")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "otel-perf: N+1 queries: 10× SELECT customers.id, customers.name FROM customers" in out
    assert f"at aapp.py:{_line_of(ASYNC_APP, '# N+1')} in list_orders" in out
    assert "fix: fetch all rows in one query" in out


def test_a_batched_endpoint_passes(pytester: pytest.Pytester) -> None:
    _write(
        pytester,
        **{
            "app.py": SYNC_APP,
            "test_orders.py": """
                from fastapi.testclient import TestClient
                from opentelemetry import trace
                from opentelemetry.sdk.trace import TracerProvider

                from app import app


                def test_batched():
                    # Traced all the same: the app created at import is the instrumented FastAPI.
                    assert type(app).__name__ == "_InstrumentedFastAPI"
                    assert isinstance(trace.get_tracer_provider(), TracerProvider)
                    response = TestClient(app).get("/orders/batched")
                    assert response.status_code == 200 and len(response.json()) == 10
            """,
        },
    )
    result = _run(pytester, "--otel-perf")
    result.assert_outcomes(passed=1)
    assert "otel-perf: tests fail on any N+1" in result.stdout.str()


def test_without_the_flag_the_plugin_installs_nothing(pytester: pytest.Pytester) -> None:
    _write(
        pytester,
        **{
            "app.py": SYNC_APP,
            "test_orders.py": """
                import sys

                import fastapi
                import pytest
                import sqlalchemy
                from fastapi.testclient import TestClient

                from app import app


                @pytest.mark.otel_perf(max_queries=0)
                def test_orders():
                    response = TestClient(app).get("/orders")
                    assert response.status_code == 200 and len(response.json()) == 10
                    # Loaded from its entry point, and nothing more: neither the SDK nor an
                    # instrumentation (FastAPI itself imports the OpenTelemetry API).
                    ours = sorted(name for name in sys.modules if name.startswith("otel_perf"))
                    assert ours == [
                        "otel_perf",
                        "otel_perf.processors",
                        "otel_perf.processors.findings",
                        "otel_perf.pytest_plugin",
                    ]
                    assert not [
                        name for name in sys.modules
                        if name.startswith(("opentelemetry.sdk", "opentelemetry.instrumentation"))
                    ]
                    assert type(app) is fastapi.FastAPI
                    assert fastapi.FastAPI.__module__ == "fastapi.applications"
                    assert type(sqlalchemy.create_engine).__name__ == "function"
            """,
        },
    )
    result = _run(pytester)
    result.assert_outcomes(passed=1)
    assert "otel-perf: tests fail" not in result.stdout.str()


def test_the_query_budget_marker(pytester: pytest.Pytester) -> None:
    _write(
        pytester,
        **{
            "app.py": SYNC_APP,
            "test_budget.py": """
                import pytest
                from fastapi.testclient import TestClient

                from app import app

                client = TestClient(app)


                @pytest.mark.otel_perf(max_queries=1)
                def test_over():
                    assert client.get("/orders/batched").status_code == 200


                @pytest.mark.otel_perf(max_queries=2)
                def test_within():
                    assert client.get("/orders/batched").status_code == 200


                @pytest.mark.otel_perf(max_querys=2)
                def test_typo():
                    assert client.get("/orders/batched").status_code == 200
            """,
        },
    )
    result = _run(pytester, "--otel-perf", "-rA")
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert "PASSED test_budget.py::test_within" in out
    assert (
        "otel-perf: GET /orders/batched ran 2 SQL queries, over this test's budget of 1 "
        "(@pytest.mark.otel_perf(max_queries=1))"
    ) in out
    assert "1× SELECT orders.id, orders.customer_id FROM orders" in out
    assert "1× SELECT customers.id AS customers_id, customers.name AS customers_name FROM customers" in out
    assert "@pytest.mark.otel_perf has no argument max_querys (it takes allow, max_queries)" in out


def test_findings_are_attributed_to_the_test_that_ran_the_request(pytester: pytest.Pytester) -> None:
    # The app is imported by the conftest: before pytest_configure, after the plugin started.
    _write(
        pytester,
        **{
            "app.py": SYNC_APP,
            "conftest.py": """
                import pytest
                from fastapi.testclient import TestClient

                from app import app


                @pytest.fixture
                def client():
                    with TestClient(app) as client:
                        yield client
            """,
            "test_attribution.py": """
                import pytest


                def test_a_n_plus_one(client):
                    assert client.get("/orders").status_code == 200


                def test_b_batched(client):
                    assert client.get("/orders/batched").status_code == 200


                @pytest.mark.otel_perf(allow=["n_plus_one"])
                def test_c_known_n_plus_one(client):
                    assert client.get("/orders").status_code == 200


                def test_d_failing_anyway(client):
                    assert client.get("/orders").status_code == 200
                    assert False, "the test's own failure"


                def test_e_batched(client):
                    assert client.get("/orders/batched").status_code == 200
            """,
        },
    )
    result = _run(pytester, "--otel-perf", "-rA")
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    for passed in ("test_b_batched", "test_c_known_n_plus_one", "test_e_batched"):
        assert f"PASSED test_attribution.py::{passed}" in out
    assert "FAILED test_attribution.py::test_a_n_plus_one - Failed: otel-perf: N+1" in out
    # A test failing on its own keeps its error; the findings come beside it.
    assert "FAILED test_attribution.py::test_d_failing_anyway - AssertionError" in out
    assert "Captured otel-perf call" in out
    assert _n_plus_one_lines(out) == 2


def test_the_ini_option_and_a_severity_threshold(pytester: pytest.Pytester) -> None:
    _write(pytester, **{"app.py": SYNC_APP, "test_orders.py": TESTCLIENT_N_PLUS_ONE})
    pytester.makeini("[pytest]\notel_perf = true\n")
    result = _run(pytester)
    result.assert_outcomes(failed=1)
    assert "otel-perf: N+1 queries: 10×" in result.stdout.str()
    # A local SQLite's N+1 is rated by its impact: far below critical, so it passes.
    result = _run(pytester, "--otel-perf-fail-on=critical")
    result.assert_outcomes(passed=1)
    assert "otel-perf: tests fail on findings of severity >= critical" in result.stdout.str()


def test_loaded_by_name_when_plugin_autoload_is_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    _write(pytester, **{"app.py": SYNC_APP, "test_orders.py": TESTCLIENT_N_PLUS_ONE})
    result = _run(pytester, "-p", "otel_perf.pytest_plugin", "--otel-perf")
    result.assert_outcomes(failed=1)
    assert "otel-perf: N+1 queries: 10×" in result.stdout.str()
    # From a conftest's `pytest_plugins`: too late for the early hook, started at pytest_configure
    # (before the test module imports the app).
    _write(pytester, **{"conftest.py": 'pytest_plugins = ["otel_perf.pytest_plugin"]\n'})
    result = _run(pytester, "--otel-perf")
    result.assert_outcomes(failed=1)
    assert "otel-perf: N+1 queries: 10×" in result.stdout.str()


def test_the_detectors_settings_come_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(pytester, **{"app.py": SYNC_APP, "test_orders.py": TESTCLIENT_N_PLUS_ONE})
    monkeypatch.setenv("OTEL_PERF_N_PLUS_ONE_MIN_REPEATS", "many")
    result = _run(pytester, "--otel-perf")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: otel-perf: OTEL_PERF_N_PLUS_ONE_MIN_REPEATS='many' is invalid" in result.stderr.str()
    # 10 repeats are not an N+1 for a project that says 20 make one.
    monkeypatch.setenv("OTEL_PERF_N_PLUS_ONE_MIN_REPEATS", "20")
    result = _run(pytester, "--otel-perf")
    result.assert_outcomes(passed=1)
