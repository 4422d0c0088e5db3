"""The SQLAlchemy `do_orm_execute` listener runs inside every ORM execution of the host app: it must
never raise into it, whatever SQLAlchemy hands it, and must not ask SQLAlchemy for what it raises
about (load options of a non-SELECT execution)."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ForeignKey, create_engine, delete, event, insert, select, text, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from otel_perf.processors import failsafe, orm

HOOK = "sqlalchemy do_orm_execute"


class ExplodingState:
    """An ORMExecuteState stand-in whose every attribute raises."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        raise self._error


class NonSelectState:
    """A DML/text execution: what SQLAlchemy raises for when asked for its load options."""

    is_select = False

    @property
    def lazy_loaded_from(self) -> Any:
        raise AssertionError("lazy_loaded_from read for a non-SELECT execution")

    @property
    def loader_strategy_path(self) -> Any:
        raise AssertionError("loader_strategy_path read for a non-SELECT execution")

    @property
    def load_options(self) -> Any:
        raise AssertionError("load_options read for a non-SELECT execution")


@pytest.fixture
def hook_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[logging.LogRecord]]:
    """Fresh failure counters, and the records the hooks' logger emits (it may not propagate)."""
    monkeypatch.setattr(failsafe, "failures", {})
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    failsafe.logger.addHandler(handler)
    yield records
    failsafe.logger.removeHandler(handler)


@pytest.mark.parametrize(
    "error",
    [InvalidRequestError("This ORM execution is not against a SELECT statement"), RuntimeError("boom")],
    ids=["sqlalchemy-error", "other-error"],
)
def test_listener_never_raises_counts_and_logs_once(
    hook_log: list[logging.LogRecord], error: Exception
) -> None:
    def run() -> str | None:
        orm._pending.set("Order.customer")  # a previous lazy load's relationship
        for _ in range(3):
            assert orm._on_orm_execute(ExplodingState(error)) is None
        return orm._pending.get()

    stale = contextvars.copy_context().run(run)

    assert stale is None, "a failed execution left the previous relationship for the next span"
    assert failsafe.failures == {HOOK: 3}
    warnings = [record for record in hook_log if record.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert HOOK in warnings[0].getMessage()
    assert warnings[0].exc_info is not None and warnings[0].exc_info[1] is error


def test_lazy_loaded_relationship_skips_load_options_of_non_selects() -> None:
    assert orm.lazy_loaded_relationship(NonSelectState()) is None


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
    customer: Mapped[Customer] = relationship(lazy="select")


def test_every_orm_execution_style_with_real_sqlalchemy(hook_log: list[logging.LogRecord]) -> None:
    """Real ORMExecuteStates: only the lazy load names a relationship; nothing fails or raises."""
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    seen: list[tuple[str, str | None]] = []
    current = {"step": ""}

    def listener(state: Any) -> None:
        seen.append((current["step"], orm.lazy_loaded_relationship(state)))
        orm._on_orm_execute(state)

    with Session(engine) as session:
        event.listen(session, "do_orm_execute", listener)
        steps: list[tuple[str, Any]] = [
            (
                "bulk insert",
                lambda: session.execute(insert(Customer), [{"id": i, "name": f"c{i}"} for i in (1, 2)]),
            ),
            ("insert", lambda: session.execute(insert(Order).values(id=1, customer_id=2))),
            ("text select", lambda: session.execute(text("SELECT id FROM customers")).all()),
            ("text dml", lambda: session.execute(text("UPDATE customers SET name = 'x' WHERE id = 1"))),
            ("update", lambda: session.execute(update(Customer).where(Customer.id == 1).values(name="y"))),
            ("bulk update", lambda: session.execute(update(Customer), [{"id": 1, "name": "z"}])),
            ("query update", lambda: session.query(Customer).filter(Customer.id == 2).update({"name": "w"})),
            ("select", lambda: session.scalars(select(Order)).one()),
            ("lazy load", lambda: session.scalars(select(Order)).one().customer.name),
            ("delete", lambda: session.execute(delete(Order).where(Order.id == 1))),
            ("query delete", lambda: session.query(Customer).filter(Customer.id == 1).delete()),
        ]
        for name, step in steps:
            current["step"] = name
            step()
        session.commit()

    assert {name for name, _ in seen} == {name for name, _ in steps}
    lazy = [(name, found) for name, found in seen if found is not None]
    assert [name for name, _ in lazy] == ["lazy load"]
    assert "Order.customer" in str(lazy[0][1])  # the relationship (with its direction, where given)
    assert failsafe.failures == {}
    assert hook_log == []
