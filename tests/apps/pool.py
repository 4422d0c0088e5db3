"""A FastAPI app with a one-connection SQLAlchemy pool: `GET /hold?ms=…` keeps the connection for
that long, so concurrent requests wait for it (pool exhaustion) and the pool is busy (utilisation).
DATABASE_URL from the environment (SQLite in the working directory by default)."""

from __future__ import annotations

import os
import time

import uvicorn
from fastapi import FastAPI
from sqlalchemy import create_engine, text

engine = create_engine(
    os.environ.get("DATABASE_URL", "sqlite:///./pool.db"), pool_size=1, max_overflow=0, pool_timeout=5
)
app = FastAPI(title="pool")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/hold")
def hold(ms: int = 100) -> dict[str, int]:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        time.sleep(ms / 1000)
    return {"held_ms": ms}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
