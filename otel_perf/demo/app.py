"""The demo shop: a FastAPI + SQLAlchemy service with the performance problems otel-perf finds,
and healthy endpoints that must stay quiet. No otel-perf import anywhere: it is instrumented
from outside, by `opentelemetry-instrument` or the sitecustomize drop-in, like any user's app.

Run: `opentelemetry-instrument python app.py` (PORT, HOST, DATABASE_URL from the environment;
127.0.0.1:8000 and SQLite in the working directory by default). Under another server
(`uvicorn main:app --workers 2`), seed first: `python -c "import main; main.seed()"`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Annotated

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Query
from sqlalchemy import ForeignKey, String, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload

PORT = int(os.environ.get("PORT", "8000"))
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///./demo-shop.db")
SELF_URL = f"http://127.0.0.1:{PORT}"

# Release 1.1.0 of the shop computes search recommendations inline: the regression `otel-perf demo`
# shows the trend monitor attributing to it.
INLINE_RECOMMENDATIONS = os.environ.get("SHOP_RECOMMENDATIONS") == "inline"

engine = create_engine(DATABASE_URL, pool_size=10, max_overflow=10)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    total_cents: Mapped[int]
    customer: Mapped[Customer] = relationship(lazy="select")
    items: Mapped[list[Item]] = relationship(back_populates="order", lazy="select")


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    sku: Mapped[str] = mapped_column(String(40))
    quantity: Mapped[int]
    order: Mapped[Order] = relationship(back_populates="items")


def seed() -> None:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        customers = [
            Customer(id=i, name=f"Customer {i}", email=f"customer{i}@example.com") for i in range(1, 41)
        ]
        session.add_all(customers)
        for order_id in range(1, 61):
            session.add(Order(id=order_id, customer_id=(order_id * 7) % 40 + 1, total_cents=order_id * 1000))
            for line in range(3):
                session.add(
                    Item(order_id=order_id, sku=f"SKU-{(order_id + line) % 12:03d}", quantity=line + 1)
                )
        session.commit()


app = FastAPI(title="otel-perf demo shop")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/orders")
def list_orders() -> list[dict[str, object]]:
    """N+1 through the ORM: each order's customer is lazy-loaded inside the loop."""
    with Session(engine) as session:
        orders = session.scalars(select(Order).order_by(Order.id).limit(25)).all()
        return [{"id": order.id, "customer": order.customer.name} for order in orders]


@app.get("/orders/eager")
def list_orders_eager() -> list[dict[str, object]]:
    """The fix: one extra IN query for all customers (must not be reported)."""
    with Session(engine) as session:
        query = select(Order).options(selectinload(Order.customer)).order_by(Order.id).limit(25)
        return [{"id": order.id, "customer": order.customer.name} for order in session.scalars(query)]


@app.get("/orders/recent")
def recent_orders() -> list[dict[str, object]]:
    """A short loop (3 lazy loads): below the N+1 threshold, must not be reported."""
    with Session(engine) as session:
        orders = session.scalars(select(Order).order_by(Order.id.desc()).limit(3)).all()
        return [{"id": order.id, "customer": order.customer.name} for order in orders]


@app.get("/dashboard")
def dashboard() -> dict[str, object]:
    """Several different queries in a row: not an N+1."""
    with Session(engine) as session:
        return {
            "customers": session.scalar(select(func.count(Customer.id))),
            "orders": session.scalar(select(func.count(Order.id))),
            "items": session.scalar(select(func.count(Item.id))),
            "revenue": session.scalar(select(func.sum(Order.total_cents))),
            "top_sku": session.execute(
                select(Item.sku, func.sum(Item.quantity))
                .group_by(Item.sku)
                .order_by(func.sum(Item.quantity).desc())
            ).scalar(),
        }


@app.get("/customers/{customer_id}")
def get_customer(customer_id: int) -> dict[str, object]:
    with Session(engine) as session:
        customer = session.get(Customer, customer_id)
        if customer is None:
            raise HTTPException(status_code=404, detail="no such customer")
        return {"id": customer.id, "name": customer.name}


@app.get("/reports/order-lines")
def order_lines_report() -> dict[str, int]:
    """N+1 in hand-written SQL, with literals pasted into the statement (they must never leak)."""
    with engine.connect() as connection:
        order_ids = [row[0] for row in connection.execute(text("SELECT id FROM orders ORDER BY id LIMIT 20"))]
        lines = 0
        for order_id in order_ids:
            lines += connection.execute(
                text(f"SELECT count(*) FROM items WHERE order_id = {order_id}")
            ).scalar_one()
        return {"orders": len(order_ids), "lines": lines}


@app.get("/reports/revenue")
def revenue_report() -> dict[str, int]:
    """A slow query: a large recursive aggregation."""
    with engine.connect() as connection:
        total = connection.execute(
            text(
                "WITH RECURSIVE series(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM series WHERE n < 1500000) "
                "SELECT sum(n % 97) FROM series"
            )
        ).scalar_one()
        return {"checksum": int(total)}


@app.get("/inventory")
def stock_levels(sku: Annotated[list[str], Query()]) -> dict[str, object]:
    """Stock levels of many SKUs in one query."""
    with Session(engine) as session:
        rows = session.execute(
            select(Item.sku, func.sum(Item.quantity)).where(Item.sku.in_(sku)).group_by(Item.sku)
        ).all()
    found: dict[str, object] = {row[0]: row[1] for row in rows}
    return {each: found.get(each, 0) for each in sku}


@app.get("/inventory/{sku}")
def stock_level(sku: str) -> dict[str, object]:
    with Session(engine) as session:
        quantity = session.scalar(select(func.coalesce(func.sum(Item.quantity), 0)).where(Item.sku == sku))
        return {"sku": sku, "quantity": quantity}


@app.get("/products/search")
def search_products(prefix: str = "SKU-00") -> dict[str, object]:
    """Fast; slower when recommendations are computed inline (release 1.1.0)."""
    with Session(engine) as session:
        skus = session.scalars(select(Item.sku).where(Item.sku.startswith(prefix)).distinct().limit(10)).all()
    if INLINE_RECOMMENDATIONS:
        time.sleep(0.2)  # stands in for a synchronous call to a recommendation service
    return {"skus": list(skus)}


SKUS = [f"SKU-{number:03d}" for number in range(8)]


@app.get("/stock/sequential")
def stock_sequential() -> dict[str, object]:
    """HTTP N+1: one call to the inventory endpoint per SKU, one after another."""
    with httpx.Client(base_url=SELF_URL, timeout=10) as client:
        return {sku: client.get(f"/inventory/{sku}").json()["quantity"] for sku in SKUS}


@app.get("/stock/parallel")
async def stock_parallel() -> dict[str, object]:
    """The same calls, concurrently: quicker, but still one round trip per SKU (a concurrent N+1)."""
    async with httpx.AsyncClient(base_url=SELF_URL, timeout=10) as client:
        responses = await asyncio.gather(*(client.get(f"/inventory/{sku}") for sku in SKUS))
        return {sku: response.json()["quantity"] for sku, response in zip(SKUS, responses, strict=True)}


@app.get("/stock/batch")
def stock_batch() -> dict[str, object]:
    """The fix: one call for every SKU."""
    with httpx.Client(base_url=SELF_URL, timeout=10) as client:
        quantities: dict[str, object] = client.get("/inventory", params={"sku": SKUS}).json()
        return quantities


if __name__ == "__main__":
    seed()
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=PORT, log_level="warning")
