"""Eager loads the request uses, and ones it never reads: `selectinload`, `joinedload` and a relationship
configured `lazy="selectin"`, each unused and used (read in the endpoint, for one object only, by
FastAPI serialising the response, or on some requests only), in sync and async sessions; and an
empty collection that is read.

Every query filters on a string literal (`secret-…`), which must never reach an alert.
DATABASE_URL (sync driver) and ASYNC_DATABASE_URL (async driver) name the same database; PORT.
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.ext.asyncio import AsyncAttrs, async_sessionmaker, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
)

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///./eager.db")
ASYNC_DATABASE_URL = os.environ.get("ASYNC_DATABASE_URL", "sqlite+aiosqlite:///./eager.db")
ITEMS = 6


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "eager_customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Supplier(Base):
    __tablename__ = "eager_suppliers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    # Configured eager: every query of suppliers loads their contacts.
    contacts: Mapped[list[Contact]] = relationship(lazy="selectin", order_by="Contact.id")


class Contact(Base):
    __tablename__ = "eager_contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    supplier_id: Mapped[int] = mapped_column(ForeignKey("eager_suppliers.id"))
    email: Mapped[str] = mapped_column(String(50))


class Order(Base):
    __tablename__ = "eager_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("eager_customers.id"))
    note: Mapped[str] = mapped_column(String(50))
    customer: Mapped[Customer] = relationship()
    items: Mapped[list[Item]] = relationship(order_by="Item.id")


class Item(Base):
    __tablename__ = "eager_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("eager_orders.id"))
    sku: Mapped[str] = mapped_column(String(50))


engine = create_engine(DATABASE_URL)
async_engine = create_async_engine(ASYNC_DATABASE_URL)
AsyncSessions = async_sessionmaker(async_engine, expire_on_commit=False)
app = FastAPI()

# Orders 1-6 have two items each; order 7 has none (the empty collection).
ORDERS = select(Order).where(Order.note == "secret-order", Order.id <= ITEMS).order_by(Order.id)
EMPTY = select(Order).where(Order.note == "secret-empty").order_by(Order.id)
SUPPLIERS = select(Supplier).where(Supplier.name != "secret-nobody").order_by(Supplier.id)


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    sku: str


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    items: list[ItemOut]


def seed() -> None:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Customer(id=number, name=f"customer {number}") for number in range(1, ITEMS + 1))
        session.add_all(Supplier(id=number, name=f"supplier {number}") for number in range(1, ITEMS + 1))
        session.flush()
        session.add_all(
            Contact(id=number, supplier_id=number, email=f"{number}@example.com")
            for number in range(1, ITEMS + 1)
        )
        session.add_all(
            Order(id=number, customer_id=number, note="secret-order") for number in range(1, ITEMS + 1)
        )
        session.add(Order(id=ITEMS + 1, customer_id=1, note="secret-empty"))
        session.flush()
        session.add_all(
            Item(id=10 * number + copy, order_id=number, sku=f"sku {number}.{copy}")
            for number in range(1, ITEMS + 1)
            for copy in (1, 2)
        )
        session.commit()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# --- sync sessions ---------------------------------------------------------------------------------


@app.get("/sync/selectin-unused")
def sync_selectin_unused() -> list[int]:
    with Session(engine) as session:
        return [order.id for order in session.scalars(ORDERS.options(selectinload(Order.items)))]


@app.get("/sync/selectin-used")
def sync_selectin_used() -> dict[int, int]:
    with Session(engine) as session:
        return {
            order.id: len(order.items) for order in session.scalars(ORDERS.options(selectinload(Order.items)))
        }


@app.get("/sync/selectin-used-once")
def sync_selectin_used_once() -> dict[int, int]:
    """Only the first order's items are read: the eager load was used."""
    with Session(engine) as session:
        orders = session.scalars(ORDERS.options(selectinload(Order.items))).all()
        return {orders[0].id: len(orders[0].items)}


@app.get("/sync/selectin-read-when-asked")
def sync_selectin_read_when_asked(details: bool = False) -> dict[int, int]:
    """Items read only when the caller asks for details: the load is used on those requests."""
    with Session(engine) as session:
        orders = session.scalars(ORDERS.options(selectinload(Order.items))).all()
        return {order.id: len(order.items) if details else 0 for order in orders}


@app.get("/sync/joined-unused")
def sync_joined_unused() -> list[int]:
    with Session(engine) as session:
        return [order.customer_id for order in session.scalars(ORDERS.options(joinedload(Order.customer)))]


@app.get("/sync/joined-used")
def sync_joined_used() -> list[str]:
    with Session(engine) as session:
        return [order.customer.name for order in session.scalars(ORDERS.options(joinedload(Order.customer)))]


@app.get("/sync/default-unused")
def sync_default_unused() -> list[str]:
    """`Supplier.contacts` is lazy="selectin": loaded with every supplier, never read here."""
    with Session(engine) as session:
        return [supplier.name for supplier in session.scalars(SUPPLIERS)]


@app.get("/sync/default-used")
def sync_default_used() -> dict[str, list[str]]:
    with Session(engine) as session:
        suppliers = session.scalars(SUPPLIERS)
        return {supplier.name: [contact.email for contact in supplier.contacts] for supplier in suppliers}


@app.get("/sync/serialized", response_model=list[OrderOut])
def sync_serialized() -> list[Order]:
    """The endpoint never reads `items`; FastAPI does, serialising the response."""
    with Session(engine) as session:
        return list(session.scalars(ORDERS.options(selectinload(Order.items))))


@app.get("/sync/empty-used")
def sync_empty_used() -> dict[int, int]:
    """An eager load that found nothing, read: used."""
    with Session(engine) as session:
        return {
            order.id: len(order.items) for order in session.scalars(EMPTY.options(selectinload(Order.items)))
        }


# --- async sessions --------------------------------------------------------------------------------


@app.get("/async/selectin-unused")
async def async_selectin_unused() -> list[int]:
    async with AsyncSessions() as session:
        return [order.id for order in await session.scalars(ORDERS.options(selectinload(Order.items)))]


@app.get("/async/selectin-used")
async def async_selectin_used() -> dict[int, int]:
    async with AsyncSessions() as session:
        orders = await session.scalars(ORDERS.options(selectinload(Order.items)))
        return {order.id: len(order.items) for order in orders}


@app.get("/async/joined-unused")
async def async_joined_unused() -> list[int]:
    async with AsyncSessions() as session:
        orders = await session.scalars(ORDERS.options(joinedload(Order.customer)))
        return [order.customer_id for order in orders]


@app.get("/async/joined-used")
async def async_joined_used() -> list[str]:
    async with AsyncSessions() as session:
        orders = await session.scalars(ORDERS.options(joinedload(Order.customer)))
        return [(await order.awaitable_attrs.customer).name for order in orders]


@app.get("/async/default-unused")
async def async_default_unused() -> list[str]:
    async with AsyncSessions() as session:
        return [supplier.name for supplier in await session.scalars(SUPPLIERS)]


@app.get("/async/default-used")
async def async_default_used() -> dict[str, list[str]]:
    async with AsyncSessions() as session:
        suppliers = await session.scalars(SUPPLIERS)
        return {supplier.name: [contact.email for contact in supplier.contacts] for supplier in suppliers}


@app.get("/async/serialized", response_model=list[OrderOut])
async def async_serialized() -> list[Order]:
    async with AsyncSessions() as session:
        return list(await session.scalars(ORDERS.options(selectinload(Order.items))))


if __name__ == "__main__":
    seed()
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
