"""A user's `main.py` that uses SQLAlchemy every common way, sync and async, so the tests can prove
otel-perf changes nothing the app does (tests/test_host_safety.py). No otel-perf import: it runs
as well in an environment without otel-perf or OpenTelemetry.

Each endpoint returns JSON of what it read or wrote, the same on every run of a fresh database
(the schema is dropped, created and seeded at startup; ids are explicit or come from a fresh
sequence). The tests call them in a fixed order; each builds on the state the previous ones left.

PORT; DATABASE_URL (sync: `sqlite:///…` or `postgresql+psycopg://…`); ASYNC_DATABASE_URL
(default: the same database through aiosqlite, or through async psycopg for psycopg URLs;
`postgresql+asyncpg://…` for asyncpg).
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import ForeignKey, String, create_engine, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncAttrs, async_sessionmaker, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    raiseload,
    relationship,
    selectinload,
    sessionmaker,
    subqueryload,
)

PORT = int(os.environ.get("PORT", "8000"))
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///./sqla-styles.db")


def _async_url(url: str) -> str:
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    return url  # postgresql+psycopg:// is sync and async


ASYNC_DATABASE_URL = os.environ.get("ASYNC_DATABASE_URL") or _async_url(DATABASE_URL)

# Query.get is legacy in SQLAlchemy 2.0; this app uses it on purpose.
warnings.filterwarnings("ignore", message=r".*Query\.get\(\) method is considered legacy")

engine = create_engine(DATABASE_URL)
async_engine = create_async_engine(ASYNC_DATABASE_URL)
SessionLocal = sessionmaker(engine)
AsyncSessionLocal = async_sessionmaker(async_engine, expire_on_commit=False)


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    tier: Mapped[str] = mapped_column(String(20), default="basic")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    total_cents: Mapped[int]
    customer: Mapped[Customer] = relationship(lazy="select")
    items: Mapped[list[Item]] = relationship(back_populates="order", lazy="select", order_by="Item.id")


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)  # always generated: a fresh sequence per run
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    sku: Mapped[str] = mapped_column(String(40))
    quantity: Mapped[int]
    order: Mapped[Order] = relationship(back_populates="items")


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(String(200))


def seed() -> None:
    """Fresh schema and rows, through the ORM's bulk INSERT (an ORM execution, like apps do)."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with SessionLocal.begin() as session:
        session.execute(insert(Customer), [{"id": i, "name": f"Customer {i}"} for i in range(1, 21)])
        session.execute(
            insert(Order),
            [
                {"id": order_id, "customer_id": (order_id * 7) % 20 + 1, "total_cents": order_id * 1000}
                for order_id in range(1, 31)
            ],
        )
        session.execute(
            insert(Item),
            [
                {"order_id": order_id, "sku": f"SKU-{(order_id + line) % 6}", "quantity": line + 1}
                for order_id in range(1, 31)
                for line in range(2)
            ],
        )


async def record_startup() -> None:
    """Async DML at startup: an app whose startup breaks never serves a request."""
    async with AsyncSessionLocal.begin() as session:
        await session.execute(insert(Event).values(kind="startup", detail="schema seeded"))


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    seed()
    await record_startup()
    yield
    await async_engine.dispose()


app = FastAPI(title="sqlalchemy styles", lifespan=lifespan)


class NotLoaded(Exception):
    """The app's own error for a relationship it forbade to lazy-load."""


@app.exception_handler(NotLoaded)
async def not_loaded(_: Request, error: NotLoaded) -> JSONResponse:
    return JSONResponse(status_code=409, content={"error": "not_loaded", "message": str(error)})


def customers(session: Session, *ids: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id))
    return [{"id": c.id, "name": c.name, "tier": c.tier} for c in rows]


def order_json(order: Order) -> dict[str, Any]:
    return {"id": order.id, "customer": order.customer.name, "items": [i.sku for i in order.items]}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/debug/listeners")
def debug_listeners() -> dict[str, list[str]]:
    """Every SQLAlchemy event listener on this app's sessions, engines and their dialects, as
    `event: module.function`: who hooks into the app's database calls."""

    def listeners(target: Any) -> list[str]:
        found = []
        for name in dir(target.dispatch):
            if name.startswith("_"):
                continue
            try:
                functions = list(getattr(target.dispatch, name))
            except TypeError:  # not a listener collection
                continue
            found += [f"{name}: {fn.__module__}.{fn.__qualname__}" for fn in functions]
        return sorted(found)

    targets = {
        "session": Session(),
        "engine": engine,
        "dialect": engine.dialect,
        "async_engine": async_engine.sync_engine,
        "async_dialect": async_engine.sync_engine.dialect,
    }
    return {name: listeners(target) for name, target in targets.items()}


# --- sync Session ---------------------------------------------------------------------------------


@app.get("/sync/text-select")
def sync_text_select() -> list[dict[str, Any]]:
    with SessionLocal() as session:
        rows = session.execute(
            text("SELECT id, name FROM customers WHERE id <= :n ORDER BY id"), {"n": 3}
        ).all()
        return [{"id": row.id, "name": row.name} for row in rows]


@app.get("/sync/text-dml")
def sync_text_dml() -> dict[str, Any]:
    with SessionLocal() as session:
        result = session.execute(
            text("UPDATE customers SET tier = :tier WHERE id BETWEEN :low AND :high"),
            {"tier": "gold", "low": 1, "high": 3},
        )
        session.commit()
        return {"rowcount": result.rowcount, "customers": customers(session, 1, 2, 3, 4)}


@app.get("/sync/insert")
def sync_insert() -> dict[str, Any]:
    with SessionLocal() as session:
        session.execute(insert(Customer).values(id=101, name="Inserted", tier="basic"))
        session.commit()
        return {"customers": customers(session, 101)}


@app.get("/sync/insert-returning")
def sync_insert_returning() -> list[dict[str, Any]]:
    with SessionLocal() as session:
        rows = session.scalars(
            insert(Customer).returning(Customer),
            [{"id": 102, "name": "Returned A"}, {"id": 103, "name": "Returned B"}],
        ).all()
        out = sorted(({"id": c.id, "name": c.name, "tier": c.tier} for c in rows), key=lambda c: c["id"])
        session.commit()
        return out


@app.get("/sync/update")
def sync_update() -> dict[str, Any]:
    with SessionLocal() as session:
        loaded = session.get(Customer, 4)
        result = session.execute(update(Customer).where(Customer.id.in_([4, 5])).values(tier="silver"))
        # synchronize_session='auto' refreshed the object already in the session
        in_session = loaded.tier if loaded is not None else None
        session.commit()
        return {"rowcount": result.rowcount, "in_session": in_session, "customers": customers(session, 4, 5)}


@app.get("/sync/delete")
def sync_delete() -> dict[str, Any]:
    with SessionLocal() as session:
        result = session.execute(delete(Customer).where(Customer.id == 103))
        session.commit()
        return {"rowcount": result.rowcount, "left": customers(session, 101, 102, 103)}


@app.get("/sync/bulk-insert")
def sync_bulk_insert() -> dict[str, Any]:
    with SessionLocal() as session:
        session.execute(
            insert(Item), [{"order_id": 1, "sku": f"BULK-{n}", "quantity": n} for n in range(1, 6)]
        )
        session.commit()
        rows = session.scalars(select(Item).where(Item.sku.like("BULK-%")).order_by(Item.id))
        return {"items": [{"id": i.id, "sku": i.sku, "quantity": i.quantity} for i in rows]}


@app.get("/sync/bulk-update")
def sync_bulk_update() -> dict[str, Any]:
    with SessionLocal() as session:
        ids = session.scalars(select(Item.id).where(Item.sku.like("BULK-%")).order_by(Item.id)).all()
        session.execute(update(Item), [{"id": item_id, "quantity": 100 + n} for n, item_id in enumerate(ids)])
        session.commit()
        rows = session.execute(select(Item.sku, Item.quantity).where(Item.id.in_(ids)).order_by(Item.id))
        return {"items": [[sku, quantity] for sku, quantity in rows]}


@app.get("/sync/add-all")
def sync_add_all() -> dict[str, Any]:
    with SessionLocal() as session:
        added = [Item(order_id=2, sku=f"ADDED-{n}", quantity=n) for n in range(3)]
        session.add_all(added)
        session.flush()
        flushed = [{"id": item.id, "sku": item.sku} for item in added]
        session.add(Event(kind="add_all", detail=f"{len(added)} items"))
        session.commit()
        return {"flushed": flushed}


@app.get("/sync/integrity-error")
def sync_integrity_error() -> dict[str, Any]:
    """The app's own handling of a failed flush; the session is usable after the rollback."""
    with SessionLocal() as session:
        session.add(Customer(id=1, name="Duplicate"))
        try:
            session.flush()
            error = None
        except IntegrityError as exc:
            error = type(exc).__name__
            session.rollback()
        return {"error": error, "customers": customers(session, 1)}


@app.get("/sync/query-legacy")
def sync_query_legacy() -> dict[str, Any]:
    with SessionLocal() as session:
        orders = session.query(Order).filter(Order.total_cents >= 25000).order_by(Order.id).all()
        first = session.query(Customer).filter_by(tier="gold").order_by(Customer.id).first()
        count = session.query(Item).filter(Item.quantity > 1).count()
        got = session.query(Customer).get(7)
        return {
            "orders": [[o.id, o.total_cents] for o in orders],
            "first_gold": first.name if first else None,
            "items_over_one": count,
            "get": got.name if got else None,
        }


@app.get("/sync/query-update")
def sync_query_update() -> dict[str, Any]:
    with SessionLocal() as session:
        updated = (
            session.query(Item)
            .filter(Item.sku == "SKU-0")
            .update({Item.quantity: Item.quantity + 10}, synchronize_session="fetch")
        )
        evaluated = session.query(Customer).filter(Customer.id == 6).update({"tier": "bronze"})
        session.commit()
        quantities = session.scalars(select(Item.quantity).where(Item.sku == "SKU-0").order_by(Item.id))
        return {"updated": updated, "evaluated": evaluated, "quantities": list(quantities)}


@app.get("/sync/query-delete")
def sync_query_delete() -> dict[str, Any]:
    with SessionLocal() as session:
        deleted = session.query(Item).filter(Item.sku.like("ADDED-%")).delete(synchronize_session=False)
        session.commit()
        return {"deleted": deleted, "left": session.query(Item).filter(Item.sku.like("ADDED-%")).count()}


@app.get("/sync/get")
def sync_get() -> dict[str, Any]:
    with SessionLocal() as session:
        found = session.get(Customer, 8)
        missing = session.get(Customer, 9999)
        again = session.get(Customer, 8)  # identity map: no query
        return {"found": found.name if found else None, "missing": missing, "same": again is found}


@app.get("/sync/selectinload")
def sync_selectinload() -> list[dict[str, Any]]:
    with SessionLocal() as session:
        query = select(Order).options(selectinload(Order.customer), selectinload(Order.items))
        return [order_json(o) for o in session.scalars(query.order_by(Order.id).limit(6))]


@app.get("/sync/joinedload")
def sync_joinedload() -> list[dict[str, Any]]:
    with SessionLocal() as session:
        query = select(Order).options(joinedload(Order.customer), joinedload(Order.items))
        return [order_json(o) for o in session.scalars(query.order_by(Order.id).limit(6)).unique()]


@app.get("/sync/subqueryload")
def sync_subqueryload() -> list[dict[str, Any]]:
    with SessionLocal() as session:
        query = select(Order).options(subqueryload(Order.customer), subqueryload(Order.items))
        return [order_json(o) for o in session.scalars(query.order_by(Order.id).limit(6))]


@app.get("/sync/raiseload")
def sync_raiseload() -> list[dict[str, Any]]:
    """Forbidden lazy load: SQLAlchemy raises, the app turns it into its own 409."""
    with SessionLocal() as session:
        orders = session.scalars(select(Order).options(raiseload(Order.customer)).order_by(Order.id).limit(3))
        try:
            return [{"id": o.id, "customer": o.customer.name} for o in orders]
        except InvalidRequestError as error:
            raise NotLoaded(str(error)) from error


@app.get("/sync/lazy-loop")
def sync_lazy_loop() -> list[dict[str, Any]]:
    """An N+1: each order's customer is lazy-loaded inside the loop."""
    with SessionLocal() as session:
        orders = session.scalars(select(Order).order_by(Order.id).limit(10)).all()
        return [{"id": o.id, "customer": o.customer.name} for o in orders]


@app.get("/sync/merge")
def sync_merge() -> dict[str, Any]:
    with SessionLocal() as session:
        merged = session.merge(Customer(id=9, name="Merged 9", tier="merged"))
        created = session.merge(Customer(id=104, name="Merged new", tier="basic"))
        session.commit()
        return {"merged": merged.name, "created": created.id, "customers": customers(session, 9, 104)}


@app.get("/sync/refresh")
def sync_refresh() -> dict[str, Any]:
    with SessionLocal() as session:
        customer = session.get(Customer, 10)
        before = customer.name
        with engine.begin() as connection:  # a change behind the session's back
            connection.execute(text("UPDATE customers SET name = 'Renamed 10' WHERE id = 10"))
        cached = customer.name
        session.refresh(customer)
        return {"before": before, "cached": cached, "after": customer.name}


@app.get("/sync/core")
def sync_core() -> dict[str, Any]:
    table = Customer.__table__
    with engine.begin() as connection:
        connection.execute(table.insert().values(id=105, name="Core", tier="core"))
        connection.execute(table.update().where(table.c.id == 105).values(name="Core updated"))
    with engine.connect() as connection:
        rows = connection.execute(select(table.c.id, table.c.name).where(table.c.tier == "core")).all()
        total = connection.execute(text("SELECT count(*) FROM orders")).scalar_one()
    return {"core_rows": [list(row) for row in rows], "orders": total}


@app.get("/sync/scalars")
def sync_scalars() -> dict[str, Any]:
    with SessionLocal() as session:
        names = session.scalars(select(Customer.name).where(Customer.id <= 5).order_by(Customer.id)).all()
        top = session.scalar(select(Order.id).order_by(Order.total_cents.desc()).limit(1))
        return {"names": list(names), "top_order": top}


@app.get("/sync/group-by")
def sync_group_by() -> list[list[Any]]:
    with SessionLocal() as session:
        rows = session.execute(
            select(Item.sku, func.count(Item.id), func.sum(Item.quantity))
            .group_by(Item.sku)
            .having(func.count(Item.id) > 1)
            .order_by(Item.sku)
        )
        return [[sku, int(count), int(total)] for sku, count, total in rows]


# --- async ------------------------------------------------------------------------------------------


@app.get("/async/text")
async def async_text() -> list[list[Any]]:
    async with AsyncSessionLocal() as session:
        result = await session.execute(
            text("SELECT id, total_cents FROM orders WHERE id <= :n ORDER BY id"), {"n": 4}
        )
        return [list(row) for row in result.all()]


@app.get("/async/text-dml")
async def async_text_dml() -> dict[str, Any]:
    async with AsyncSessionLocal() as session:
        result = await session.execute(
            text("UPDATE orders SET total_cents = total_cents + 1 WHERE id <= :n"), {"n": 2}
        )
        await session.commit()
        totals = await session.scalars(select(Order.total_cents).where(Order.id <= 3).order_by(Order.id))
        return {"rowcount": result.rowcount, "totals": list(totals)}


@app.get("/async/insert")
async def async_insert() -> dict[str, Any]:
    async with AsyncSessionLocal() as session:
        await session.execute(insert(Customer).values(id=201, name="Async inserted"))
        await session.execute(insert(Event), [{"kind": "async_bulk", "detail": f"row {n}"} for n in range(3)])
        await session.commit()
        events = await session.scalars(
            select(Event.detail).where(Event.kind == "async_bulk").order_by(Event.id)
        )
        return {"customer": (await session.get(Customer, 201)).name, "events": list(events)}


@app.get("/async/update")
async def async_update() -> dict[str, Any]:
    async with AsyncSessionLocal() as session:
        result = await session.execute(update(Customer).where(Customer.id == 201).values(tier="async"))
        await session.execute(
            update(Customer), [{"id": 11, "tier": "async-bulk"}, {"id": 12, "tier": "async-bulk"}]
        )
        await session.commit()
        rows = await session.execute(
            select(Customer.id, Customer.tier).where(Customer.id.in_([11, 12, 201])).order_by(Customer.id)
        )
        return {"rowcount": result.rowcount, "tiers": [list(row) for row in rows]}


@app.get("/async/delete")
async def async_delete() -> dict[str, Any]:
    async with AsyncSessionLocal() as session:
        result = await session.execute(delete(Event).where(Event.kind == "async_bulk"))
        await session.commit()
        left = await session.scalar(select(func.count(Event.id)).where(Event.kind == "async_bulk"))
        return {"rowcount": result.rowcount, "left": left}


@app.get("/async/scalars")
async def async_scalars() -> dict[str, Any]:
    async with AsyncSessionLocal() as session:
        names = await session.scalars(select(Customer.name).where(Customer.id <= 4).order_by(Customer.id))
        eager = await session.scalars(
            select(Order).options(selectinload(Order.customer)).order_by(Order.id).limit(3)
        )
        return {"names": list(names), "orders": [[o.id, o.customer.name] for o in eager]}


@app.get("/async/run-sync-lazy")
async def async_run_sync_lazy() -> list[dict[str, Any]]:
    """Lazy loads in a loop, inside run_sync (the sync ORM on the async driver)."""

    def load(session: Session) -> list[dict[str, Any]]:
        orders = session.scalars(select(Order).order_by(Order.id).offset(10).limit(8)).all()
        return [{"id": o.id, "customer": o.customer.name} for o in orders]

    async with AsyncSessionLocal() as session:
        return await session.run_sync(load)


@app.get("/async/awaitable-attrs")
async def async_awaitable_attrs() -> list[dict[str, Any]]:
    async with AsyncSessionLocal() as session:
        orders = (await session.scalars(select(Order).order_by(Order.id).limit(3))).all()
        out = []
        for order in orders:
            customer = await order.awaitable_attrs.customer
            items = await order.awaitable_attrs.items
            out.append({"id": order.id, "customer": customer.name, "items": [i.sku for i in items]})
        return out


@app.get("/async/gather")
async def async_gather() -> dict[str, Any]:
    async def count(model: type[Base]) -> int:
        async with AsyncSessionLocal() as session:
            return await session.scalar(select(func.count()).select_from(model))

    async def customer_name(customer_id: int) -> str:
        async with AsyncSessionLocal() as session:
            return (await session.get(Customer, customer_id)).name

    counts = await asyncio.gather(*(count(model) for model in (Customer, Order, Item, Event)))
    names = await asyncio.gather(*(customer_name(n) for n in (1, 2, 3, 4)))
    return {"counts": counts, "names": names}


@app.get("/summary")
def summary() -> dict[str, Any]:
    """Everything the calls before left in the database."""
    with SessionLocal() as session:
        return {
            "customers": [
                list(row)
                for row in session.execute(
                    select(Customer.id, Customer.name, Customer.tier).order_by(Customer.id)
                )
            ],
            "orders": [
                list(row)
                for row in session.execute(
                    select(Order.id, Order.customer_id, Order.total_cents).order_by(Order.id)
                )
            ],
            "items": [
                list(row)
                for row in session.execute(
                    select(Item.id, Item.order_id, Item.sku, Item.quantity).order_by(Item.id)
                )
            ],
            "events": [
                list(row)
                for row in session.execute(select(Event.id, Event.kind, Event.detail).order_by(Event.id))
            ],
        }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
