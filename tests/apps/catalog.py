"""Two services for the cross-service N+1: `basket` calls `catalog` once per item, by name (a slug
the URL template can't see as an id), and each catalog request runs one query. Neither process
sees an N+1 in its own part of the trace; the whole trace shows one.

ROLE=basket|catalog, PORT, CATALOG_URL (for basket).
"""

from __future__ import annotations

import os

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text

ROLE = os.environ["ROLE"]
PORT = int(os.environ["PORT"])
NAMES = ["apple", "banana", "cherry", "damson", "elderberry", "fig", "grape"]

app = FastAPI(title=ROLE)
engine = create_engine(os.environ.get("DATABASE_URL", "sqlite:///./catalog.db"))


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/by-name/{name}")
def item_by_name(name: str) -> dict[str, object]:
    with engine.connect() as connection:
        price = connection.execute(
            text("SELECT price FROM items WHERE name = :name"), {"name": name}
        ).scalar()
    return {"name": name, "price": price}


@app.get("/basket")
def basket() -> dict[str, object]:
    with httpx.Client(base_url=os.environ["CATALOG_URL"], timeout=10) as client:
        return {name: client.get(f"/items/by-name/{name}").json()["price"] for name in NAMES}


def seed() -> None:
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS items"))
        connection.execute(text("CREATE TABLE items (name TEXT PRIMARY KEY, price INTEGER)"))
        for number, name in enumerate(NAMES):
            connection.execute(
                text("INSERT INTO items VALUES (:name, :price)"), {"name": name, "price": number * 100}
            )


if __name__ == "__main__":
    if ROLE == "catalog":
        seed()
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
