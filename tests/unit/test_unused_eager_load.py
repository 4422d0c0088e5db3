"""Unused eager loads: the detector on hand-built trees (it reads only `perf.orm.eager_unused` on query
spans), and the ORM side with real SQLAlchemy and its instrumentation: which loads are marked, on
which span, and that watching reads changes nothing the app sees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.trace import SpanKind
from sqlalchemy import ForeignKey, create_engine, event, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    raiseload,
    relationship,
    selectinload,
    subqueryload,
)

from otel_perf.processors import failsafe, orm, semconv
from otel_perf.processors.detectors.unused_eager_load import (
    UnusedEagerLoadDetector,
    UnusedEagerLoadSettings,
)
from otel_perf.processors.findings import fingerprint
from otel_perf.processors.tree import TraceShape
from tests.unit.builders import query, server, tree
from tests.unit.test_processor import Harness

PARENT_SQL = "SELECT orders.id FROM orders WHERE orders.note = 'secret-note'"
SELECTIN_SQL = "SELECT items.id FROM items WHERE items.order_id IN (1, 2, 3)"


def unused(relationships: list[str], strategies: list[str]) -> dict[str, Any]:
    return {semconv.PERF_ORM_EAGER_UNUSED: relationships, semconv.PERF_ORM_EAGER_UNUSED_STRATEGY: strategies}


# --- the detector: hand-built trees ------------------------------------------------------------------


def test_an_unused_selectin_load_names_relationship_strategy_query_and_its_cost() -> None:
    root = server("GET /orders", 0, 100)
    parent = query(PARENT_SQL, 1, 3, root)
    loading = query(SELECTIN_SQL, 3, 7, root, extra=unused(["Order.items"], ["selectinload"]))
    [finding] = UnusedEagerLoadDetector().detect(tree(root, parent, loading))
    assert finding.type == "unused_eager_load"
    assert finding.operation == "GET /orders"
    assert finding.severity.label == "low"
    assert finding.offending == [loading.span_id]
    assert finding.fingerprint == fingerprint("unused_eager_load", "shop", "GET /orders", "Order.items")
    details = finding.details
    assert details["kind"] == "db"
    assert details["relationship"] == "Order.items"
    assert details["strategy"] == "selectinload"
    assert details["wasted_ms"] == 4.0
    assert details["wasted_ms_is_upper_bound"] is False
    assert details["statement"] == "SELECT items.id FROM items WHERE items.order_id IN (?)"
    assert "drop .options(selectinload(Order.items))" in details["suggestion"]


def test_a_request_that_failed_is_no_evidence() -> None:
    """A 4xx/5xx stopped before reading what it loaded; the success path may need the load."""
    for status in (400, 403, 500):
        root = server("PUT /articles/{slug}", 0, 100, attributes={"http.response.status_code": status})
        loading = query(SELECTIN_SQL, 3, 7, root, extra=unused(["Article.tags"], ["joinedload"]))
        assert list(UnusedEagerLoadDetector().detect(tree(root, loading))) == []


def test_a_joined_load_costs_at_most_its_query_which_is_named_without_literals() -> None:
    root = server("GET /orders", 0, 100)
    joined = "SELECT orders.id, customers.name FROM orders LEFT OUTER JOIN customers ON customers.id = "
    loading = query(
        joined + "orders.customer_id WHERE orders.note = 'secret-note'",
        1,
        61,
        root,
        extra=unused(["Order.customer"], ["joinedload"]),
    )
    [finding] = UnusedEagerLoadDetector().detect(tree(root, loading))
    assert finding.details["wasted_ms_is_upper_bound"] is True
    assert finding.details["wasted_ms"] == 60.0
    assert finding.severity.label == "medium"
    assert "secret" not in str(finding.to_json())
    assert "≤ 60.0 ms" in finding.title


def test_a_relationship_configured_eager_gets_the_relationship_level_fix() -> None:
    root = server("GET /suppliers", 0, 400)
    loading = query(SELECTIN_SQL, 1, 301, root, extra=unused(["Supplier.contacts"], ['lazy="selectin"']))
    [finding] = UnusedEagerLoadDetector().detect(tree(root, loading))
    assert finding.severity.label == "high"
    assert finding.details["strategy"] == 'lazy="selectin"'
    assert 'lazy="select"' in finding.details["suggestion"]


def test_one_finding_per_relationship_however_many_queries_loaded_it() -> None:
    root = server("GET /orders", 0, 100)
    first = query(SELECTIN_SQL, 1, 2, root, extra=unused(["Order.items"], ["selectinload"]))
    second = query(SELECTIN_SQL, 3, 5, root, extra=unused(["Order.items"], ["selectinload"]))
    both = query(
        PARENT_SQL, 6, 9, root, extra=unused(["Order.customer", "Customer.region"], ["joinedload"] * 2)
    )
    findings = {
        each.details["relationship"]: each
        for each in UnusedEagerLoadDetector().detect(tree(root, first, second, both))
    }
    assert set(findings) == {"Order.items", "Order.customer", "Customer.region"}
    items = findings["Order.items"]
    assert items.details["queries"] == 2 and items.details["wasted_ms"] == 3.0
    assert items.offending == [first.span_id, second.span_id]
    assert findings["Customer.region"].offending == [both.span_id]


def test_the_drivers_echo_of_the_loading_query_counts_once() -> None:
    root = server("GET /orders", 0, 100)
    orm_span = query(SELECTIN_SQL, 1, 9, root, extra=unused(["Order.items"], ["selectinload"]))
    driver_span = query(SELECTIN_SQL, 2, 8, root, extra=unused(["Order.items"], ["selectinload"]))
    orm_span.scope, driver_span.scope = (
        "opentelemetry.instrumentation.sqlalchemy",
        "opentelemetry.instrumentation.sqlite3",
    )
    [finding] = UnusedEagerLoadDetector().detect(tree(root, orm_span, driver_span))
    assert finding.offending == [orm_span.span_id]
    assert finding.details["wasted_ms"] == 8.0


def test_thresholds_come_from_settings_and_unmarked_queries_are_quiet() -> None:
    root = server("GET /orders", 0, 100)
    plain = query(PARENT_SQL, 1, 30, root)
    loading = query(SELECTIN_SQL, 30, 50, root, extra=unused(["Order.items"], ["selectinload"]))
    detector = UnusedEagerLoadDetector(UnusedEagerLoadSettings(medium_ms=5, high_ms=15))
    [finding] = detector.detect(tree(root, plain, loading))
    assert finding.severity.label == "high"
    assert list(UnusedEagerLoadDetector().detect(tree(server("GET /x", 0, 10), plain))) == []
    scoped = UnusedEagerLoadDetector(
        UnusedEagerLoadSettings(scopes={"operation:GET /orders": {"medium_ms": 10}})
    )
    [finding] = scoped.detect(tree(root, plain, loading))
    assert finding.severity.label == "medium"  # 20 ms: low by default, medium for this operation
    # Only the SDK host's shape says which traces carry the mark (it makes it); the analyzer's never
    # pays for the check (an app analysing in-process has reported it already).
    assert not detector.could_match(TraceShape(3, 1, 0))
    assert detector.could_match(TraceShape(3, 1, 0, eager_unused=True))


# --- the ORM side: real SQLAlchemy, its instrumentation, the span processor -----------------------------


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    contacts: Mapped[list[Contact]] = relationship(lazy="selectin")


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    customer: Mapped[Customer] = relationship()
    items: Mapped[list[Item]] = relationship(order_by="Item.id")


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))


@pytest.fixture
def harness() -> Iterator[Harness]:
    made = Harness()
    yield made
    made.provider.shutdown()


@pytest.fixture
def engine(harness: Harness) -> Iterator[Any]:
    made = create_engine("sqlite://")
    instrumentor = SQLAlchemyInstrumentor()
    instrumentor.instrument(engine=made, tracer_provider=harness.provider)
    Base.metadata.create_all(made)
    with Session(made) as session:
        session.add_all(
            Customer(id=number, name=f"c{number}", contacts=[Contact(id=number)]) for number in (1, 2)
        )
        session.flush()
        session.add_all(Order(id=number, customer_id=number, items=[Item(id=number)]) for number in (1, 2))
        session.add(Order(id=3, customer_id=1))
        session.commit()
    yield made
    instrumentor.uninstrument()
    made.dispose()


def _marked(spans: dict[str, list[Any]]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """request name → (unused relationships, strategies) over its query spans."""
    by_trace = {span.context.trace_id: span.name for span in spans.get("GET", [])}
    by_trace.update(
        {
            span.context.trace_id: name
            for name, each in spans.items()
            for span in each
            if name.startswith("GET ")
        }
    )
    found: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for each in spans.values():
        for span in each:
            names = span.attributes.get(semconv.PERF_ORM_EAGER_UNUSED)
            if names:
                request = by_trace[span.context.trace_id]
                old = found.get(request, ((), ()))
                strategies = span.attributes[semconv.PERF_ORM_EAGER_UNUSED_STRATEGY]
                found[request] = (old[0] + tuple(names), old[1] + tuple(strategies))
    return found


def test_loads_the_request_never_read_are_marked_on_the_loading_query(harness: Harness, engine: Any) -> None:
    failsafe.failures.clear()
    requests = {
        "GET /selectin-unused": lambda s: [
            o.id for o in s.scalars(select(Order).options(selectinload(Order.items)))
        ],
        "GET /selectin-used-once": lambda s: [
            len(o.items) if o.id == 2 else o.id
            for o in s.scalars(select(Order).options(selectinload(Order.items)))
        ],
        "GET /joined-unused": lambda s: [
            o.id for o in s.scalars(select(Order).options(joinedload(Order.items))).unique()
        ],
        "GET /joined-used": lambda s: [
            o.customer.name for o in s.scalars(select(Order).options(joinedload(Order.customer)))
        ],
        "GET /subquery-unused": lambda s: [
            o.id for o in s.scalars(select(Order).options(subqueryload(Order.items)))
        ],
        "GET /default-used": lambda s: [len(c.contacts) for c in s.scalars(select(Customer))],
        "GET /empty-used": lambda s: [
            len(o.items)
            for o in s.scalars(select(Order).where(Order.id == 3).options(selectinload(Order.items)))
        ],
    }
    for name, work in requests.items():
        with harness.tracer.start_as_current_span(name, kind=SpanKind.SERVER), Session(engine) as session:
            work(session)
    marked = _marked(harness.flush())
    assert marked == {
        "GET /selectin-unused": (("Order.items",), ("selectinload",)),
        "GET /joined-unused": (("Order.items",), ("joinedload",)),
        # Reading the customer's name is not reading its contacts, which it loads (lazy="selectin").
        "GET /joined-used": (("Customer.contacts",), ('lazy="selectin"',)),
        "GET /subquery-unused": (("Order.items",), ("subqueryload",)),
    }
    alerted = {
        alert.finding.operation for alert in harness.sink.alerts if alert.finding.type == "unused_eager_load"
    }
    assert alerted == set(marked)
    assert failsafe.failures == {}
    assert not orm._traces  # every trace's bookkeeping went with it


def test_with_a_driver_instrumentation_too_the_mark_goes_on_sqlalchemys_span(
    harness: Harness, engine: Any
) -> None:
    """`opentelemetry-bootstrap` adds the driver's instrumentation: each query is traced again,
    inside SQLAlchemy's span. The mark must stay on SQLAlchemy's span (the driver's is an echo,
    which detectors skip), or every finding would vanish."""
    driver = harness.provider.get_tracer("opentelemetry.instrumentation.sqlite3")
    open_spans: list[Any] = []

    def start(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        attributes = {"db.system": "sqlite", "db.statement": statement}
        open_spans.append(driver.start_span("SELECT", kind=SpanKind.CLIENT, attributes=attributes))

    def end(*_: Any) -> None:
        open_spans.pop().end()

    event.listen(engine, "before_cursor_execute", start)
    event.listen(engine, "after_cursor_execute", end)
    try:
        with (
            harness.tracer.start_as_current_span("GET /unused", kind=SpanKind.SERVER),
            Session(engine) as session,
        ):
            [o.id for o in session.scalars(select(Order).options(selectinload(Order.items)))]
    finally:
        event.remove(engine, "before_cursor_execute", start)
        event.remove(engine, "after_cursor_execute", end)
    spans = [span for each in harness.flush().values() for span in each]
    marked = [span for span in spans if span.attributes.get(semconv.PERF_ORM_EAGER_UNUSED)]
    assert [span.instrumentation_scope.name for span in marked] == [
        "opentelemetry.instrumentation.sqlalchemy"
    ]
    assert [alert.finding.type for alert in harness.sink.alerts] == ["unused_eager_load"]


def test_watching_reads_changes_nothing_the_app_sees(harness: Harness, engine: Any) -> None:
    with harness.tracer.start_as_current_span("GET /warm", kind=SpanKind.SERVER), Session(engine) as session:
        session.scalars(select(Order).options(selectinload(Order.items))).all()
    harness.flush()
    attribute = Order.__dict__["items"]
    assert type(attribute).__name__ == "ReadWatchedAttribute"
    assert Order.items is attribute  # the same object: options, comparisons and caches keep working
    with Session(engine) as session:  # outside any trace, and inside one
        plain = [
            (o.id, [i.id for i in o.items])
            for o in session.scalars(select(Order).options(selectinload(Order.items)))
        ]
        assert session.scalars(select(Order).where(Order.items.any(Item.id == 2))).one().id == 2
        order = session.scalars(select(Order).where(Order.id == 1).options(raiseload(Order.customer))).one()
        with pytest.raises(Exception, match="lazy='raise'"):
            order.customer  # noqa: B018  # the app's own error, untouched
    with harness.tracer.start_as_current_span("GET /again", kind=SpanKind.SERVER), Session(engine) as session:
        traced = [
            (o.id, [i.id for i in o.items])
            for o in session.scalars(select(Order).options(selectinload(Order.items)))
        ]
    harness.flush()
    assert plain == traced == [(1, [1]), (2, [2]), (3, [])]


def test_a_load_is_unused_once_the_operation_left_it_unread_requests_in_a_row(
    harness: Harness, engine: Any
) -> None:
    """The default: three requests in a row. A read (an admin's page reading what a customer's
    does not) starts the count over; each operation counts its own."""
    Harness(eager_min_requests=3).provider.shutdown()  # as the processor sets it from its settings
    try:

        def unused(name: str, read: bool) -> bool:
            with harness.tracer.start_as_current_span(name, kind=SpanKind.SERVER), Session(engine) as session:
                orders = session.scalars(select(Order).options(selectinload(Order.items))).all()
                if read:
                    [len(order.items) for order in orders]
            marked = _marked(harness.flush())
            harness.exporter.clear()
            return name in marked

        assert [unused("GET /streak/orders", read=False) for _ in range(3)] == [False, False, True]
        assert unused("GET /streak/orders", read=True) is False
        assert [unused("GET /streak/orders", read=False) for _ in range(3)] == [False, False, True]
        assert unused("GET /streak/admin/orders", read=False) is False  # its own count
        assert unused("GET /streak/orders", read=False) is True  # still unread: still unused
    finally:
        orm.watch_lazy_loads(min_unread_requests=1)


def test_loads_of_an_object_the_request_deletes_were_used(harness: Harness, engine: Any) -> None:
    """`session.delete(order)` reads the items loaded with it (to delete or detach them) without
    going through `order.items`: not an unused eager load."""
    with (
        harness.tracer.start_as_current_span("DELETE /orders/{id}", kind=SpanKind.SERVER),
        Session(engine) as session,
    ):
        order = session.scalars(select(Order).where(Order.id == 3).options(selectinload(Order.items))).one()
        session.delete(order)  # order 3 has no items: nothing to detach
        session.flush()
        session.rollback()  # the fixture's rows stay for the other tests
    with (
        harness.tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER),
        Session(engine) as session,
    ):
        session.scalars(select(Order).where(Order.id == 3).options(selectinload(Order.items))).one()
    assert _marked(harness.flush()) == {"GET /orders/{id}": (("Order.items",), ("selectinload",))}


def test_behind_a_mount_each_route_counts_its_own_requests(harness: Harness, engine: Any) -> None:
    """`app.mount("/api", api)`: every request's root span is `GET /api`, the sub-app's span has the
    route. A route that reads the load must not start over the count of one that never does."""
    Harness(eager_min_requests=3).provider.shutdown()  # as the processor sets it from its settings
    try:

        def unused(route: str, read: bool) -> bool:
            with (
                harness.tracer.start_as_current_span(
                    "GET /api", kind=SpanKind.SERVER, attributes={"http.route": "/api"}
                ),
                harness.tracer.start_as_current_span(
                    f"GET {route}", kind=SpanKind.INTERNAL, attributes={"http.route": route}
                ),
                Session(engine) as session,
            ):
                orders = session.scalars(select(Order).options(selectinload(Order.items))).all()
                if read:
                    [len(order.items) for order in orders]
            spans = [span for each in harness.flush().values() for span in each]
            harness.exporter.clear()
            return any(span.attributes.get(semconv.PERF_ORM_EAGER_UNUSED) for span in spans)

        found = []
        for _ in range(3):
            found.append(unused("/mounted/orders/{id}/comments", read=False))
            assert unused("/mounted/orders", read=True) is False
        assert found == [False, False, True]
    finally:
        orm.watch_lazy_loads(min_unread_requests=1)


class _PathsBase(DeclarativeBase):
    pass


class Person(_PathsBase):
    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)
    mentor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    mentees: Mapped[list[Person]] = relationship()


class Post(_PathsBase):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    author: Mapped[Person] = relationship()


def test_a_mapper_loaded_below_itself_is_looked_at_on_each_path(harness: Harness) -> None:
    """`joinedload(Post.author).joinedload(Person.mentees)`: the mentees (people) load before their
    author does, with nothing joined below them; the author's unread mentees must still be found
    (the public app's `User.followers`, missed when a follower loaded first)."""
    engine = create_engine("sqlite://")
    instrumentor = SQLAlchemyInstrumentor()
    instrumentor.instrument(engine=engine, tracer_provider=harness.provider)
    try:
        _PathsBase.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all([Person(id=1), Person(id=2, mentor_id=1), Post(id=1, author_id=1)])
            session.commit()
        with (
            harness.tracer.start_as_current_span("GET /posts", kind=SpanKind.SERVER),
            Session(engine) as session,
        ):
            posts = session.scalars(select(Post).options(joinedload(Post.author).joinedload(Person.mentees)))
            [post.author.id for post in posts.unique()]  # the author read, not the mentees
        assert _marked(harness.flush())["GET /posts"][0] == ("Person.mentees",)
    finally:
        instrumentor.uninstrument()
        engine.dispose()
