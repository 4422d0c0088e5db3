"""Lazy loads where they are hard to attribute: async sessions (the ORM runs in a greenlet),
`run_sync`, FastAPI serialising ORM objects after the endpoint returned (sync and async endpoints),
one-to-many relationships and a GROUP BY query (where a joined eager load is the wrong fix).

DATABASE_URL (sync driver) and ASYNC_DATABASE_URL (async driver) name the same database; PORT.
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ForeignKey, String, create_engine, func, select
from sqlalchemy.ext.asyncio import AsyncAttrs, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///./lazy.db")
ASYNC_DATABASE_URL = os.environ.get("ASYNC_DATABASE_URL", "sqlite+aiosqlite:///./lazy.db")
ITEMS = 8


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "lazy_customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    orders: Mapped[list[Order]] = relationship(back_populates="customer")


class Order(Base):
    __tablename__ = "lazy_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("lazy_customers.id"))
    customer: Mapped[Customer] = relationship(back_populates="orders")


engine = create_engine(DATABASE_URL)
async_engine = create_async_engine(ASYNC_DATABASE_URL)
AsyncSessions = async_sessionmaker(async_engine, expire_on_commit=False)
app = FastAPI()


class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    customer: CustomerOut


def seed() -> None:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        customers = [Customer(id=number, name=f"customer {number}") for number in range(1, ITEMS + 1)]
        session.add_all(customers)
        session.flush()
        session.add_all(Order(id=number, customer_id=number) for number in range(1, ITEMS + 1))
        session.add_all(Order(id=100 + number, customer_id=number) for number in range(1, ITEMS + 1))
        session.commit()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/sync/customers")
def sync_customers() -> dict[str, int]:
    """One-to-many lazy loads: `Customer.orders` per customer."""
    with Session(engine) as session:
        customers = session.scalars(select(Customer).order_by(Customer.id)).all()
        return {customer.name: len(customer.orders) for customer in customers}


@app.get("/sync/grouped")
def sync_grouped() -> dict[int, str]:
    """Many-to-one lazy loads of orders loaded by a GROUP BY query: joinedload would break it."""
    with Session(engine) as session:
        query = select(Order).group_by(Order.id).having(func.count(Order.id) > 0).order_by(Order.id)
        orders = session.scalars(query.where(Order.id <= ITEMS)).all()
        return {order.id: order.customer.name for order in orders}


@app.get("/async/awaitable")
async def async_awaitable() -> dict[int, str]:
    """Many-to-one lazy loads through `awaitable_attrs` in an async session."""
    async with AsyncSessions() as session:
        orders = (await session.scalars(select(Order).where(Order.id <= ITEMS).order_by(Order.id))).all()
        return {order.id: (await order.awaitable_attrs.customer).name for order in orders}


def _names(session: Session) -> dict[int, str]:
    orders = session.scalars(select(Order).where(Order.id <= ITEMS).order_by(Order.id)).all()
    return {order.id: order.customer.name for order in orders}


@app.get("/async/run-sync")
async def async_run_sync() -> dict[int, str]:
    """Lazy loads in plain ORM code run through `AsyncSession.run_sync`."""
    async with AsyncSessions() as session:
        return await session.run_sync(_names)


# The session that loaded the objects an endpoint returned, kept until that endpoint is called again:
# the objects are serialised after the endpoint returned, and must still be attached to it.
_serialising: dict[str, Session] = {}
ORDERS = select(Order).where(Order.id <= ITEMS).order_by(Order.id)


@app.get("/sync/serialized", response_model=list[OrderOut])
def sync_serialized() -> list[Order]:
    """The endpoint returns ORM objects; FastAPI reads `order.customer` while serialising them."""
    session = _serialising["sync"] = Session(engine)
    return list(session.scalars(ORDERS).all())


@app.get("/async/serialized", response_model=list[OrderOut])
async def async_serialized() -> list[Order]:
    """The same from an async endpoint (serialised on the event loop, not in the thread pool)."""
    session = _serialising["async"] = Session(engine)
    return list(session.scalars(ORDERS).all())


if __name__ == "__main__":
    seed()
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
