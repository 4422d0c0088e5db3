"""Pool exhaustion with real SQLAlchemy, its real instrumentation and a real pool: a request that
waited for a connection is reported, one that timed out is critical, and neither is called a slow
query; a request that got its connection at once is quiet."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.trace import SpanKind
from sqlalchemy import create_engine, exc, text
from sqlalchemy.pool import QueuePool

from tests.unit.test_processor import Harness


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    SQLAlchemyInstrumentor().instrument(tracer_provider=made.provider)
    yield made
    SQLAlchemyInstrumentor().uninstrument()
    made.provider.shutdown()


def test_waiting_for_a_pooled_connection_is_pool_exhaustion_not_a_slow_query(
    harness: Harness, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}", pool_size=1, max_overflow=0, pool_timeout=0.6)
    tracer = harness.tracer
    with tracer.start_as_current_span("GET /quick", kind=SpanKind.SERVER), engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    held = engine.connect()
    threading.Timer(0.3, held.close).start()
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER), engine.connect() as connection:
        connection.execute(text("SELECT 1"))  # got the connection once the other request let it go
    held = engine.connect()
    with tracer.start_as_current_span("GET /reports", kind=SpanKind.SERVER), pytest.raises(exc.TimeoutError):
        engine.connect()
    held.close()
    engine.dispose()
    harness.flush()
    alerts = {alert.finding.operation: alert.finding for alert in harness.sink.alerts}
    assert set(alerts) == {"GET /orders", "GET /reports"}
    waited, timed_out = alerts["GET /orders"], alerts["GET /reports"]
    assert waited.type == timed_out.type == "pool_exhaustion"
    assert 250 <= waited.details["wait_ms"] < 600 and not waited.details["timed_out"]
    assert waited.severity.label == "medium"
    assert timed_out.details["timed_out"] and timed_out.severity.label == "critical"
    assert timed_out.details["db_system"] == "sqlite"


def test_opening_a_new_connection_slowly_is_no_pool_exhaustion(harness: Harness, tmp_path: Path) -> None:
    """A fresh pool's first checkout (or a far database's handshake) takes time without any wait for
    a free connection: found on a public app, where every first request was called exhausted."""
    path = tmp_path / "shop.db"

    def slow_handshake() -> sqlite3.Connection:
        time.sleep(0.3)
        return sqlite3.connect(path, check_same_thread=False)

    engine = create_engine(
        f"sqlite:///{path}", creator=slow_handshake, poolclass=QueuePool, pool_size=1, max_overflow=0
    )
    with (
        harness.tracer.start_as_current_span("GET /first", kind=SpanKind.SERVER),
        engine.connect() as connection,
    ):
        connection.execute(text("SELECT 1"))
    held = engine.connect()
    threading.Timer(0.3, held.close).start()
    with (
        harness.tracer.start_as_current_span("GET /waited", kind=SpanKind.SERVER),
        engine.connect() as connection,
    ):
        connection.execute(text("SELECT 1"))
    engine.dispose()
    spans = harness.flush()
    opened = [span.attributes.get("perf.db.new_connection") for span in spans["connect"]]
    assert opened == [True, None, None]  # the first checkout opened the one connection
    assert [alert.finding.operation for alert in harness.sink.alerts] == ["GET /waited"]
