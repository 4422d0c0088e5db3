"""A user's `main.py` with one endpoint per pattern the detectors should find, and its healthy
twin next to it: concurrent N+1s (async SQLAlchemy, httpx), a GraphQL-style resolver loop and a
loop of an HTTP call and a query (M+N), consecutive independent queries and HTTP calls that could
have run concurrently, Redis N+1s (sync and `redis.asyncio`), a loop that takes a connection per
query, and work outside any request (start-up, a background job, a bare query in a thread).

Real parts only: FastAPI under uvicorn, SQLAlchemy (sync and async) on SQLite or PostgreSQL, a
real Redis server, httpx calls to this same server. No otel-perf import; the OpenTelemetry API
only for the background job's span (what a user's job runner does).

PORT; DATABASE_URL (sync: `sqlite:///…` or `postgresql+psycopg://…`); ASYNC_DATABASE_URL (default:
aiosqlite for SQLite, asyncpg for PostgreSQL); REDIS_URL (required).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import redis
import redis.asyncio
import uvicorn
from fastapi import FastAPI
from opentelemetry import trace
from sqlalchemy import ForeignKey, String, create_engine, event, func, insert, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload

PORT = int(os.environ.get("PORT", "8000"))
SELF_URL = f"http://127.0.0.1:{PORT}"
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///./breadth.db")


def _async_url(url: str) -> str:
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    return url.replace("+psycopg", "+asyncpg", 1)


ASYNC_DATABASE_URL = os.environ.get("ASYNC_DATABASE_URL") or _async_url(DATABASE_URL)
REDIS_URL = os.environ["REDIS_URL"]
IS_SQLITE = DATABASE_URL.startswith("sqlite")

BOOKS = 10
# Each of the consecutive aggregate queries takes this long (PostgreSQL's pg_sleep; on SQLite the
# same function, registered below): three in a row waste 2 x 60 ms against running them together,
# and each stays well under the 100 ms of a slow query.
PAUSE_S = 0.06
UPSTREAM_DELAY_S = 0.15
tracer = trace.get_tracer("breadth.jobs")

engine = create_engine(DATABASE_URL)
async_engine = create_async_engine(ASYNC_DATABASE_URL)
AsyncSessions = async_sessionmaker(async_engine, expire_on_commit=False)
cache = redis.Redis.from_url(REDIS_URL)
async_cache = redis.asyncio.Redis.from_url(REDIS_URL)
http = httpx.Client(base_url=SELF_URL, timeout=10)


def _pg_sleep(seconds: float) -> None:
    time.sleep(seconds)


if IS_SQLITE:
    # PostgreSQL's pg_sleep for SQLite, so the slow statements read the same on both databases.
    for target in (engine, async_engine.sync_engine):

        @event.listens_for(target, "connect")
        def _register_sleep(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.create_function("pg_sleep", 1, _pg_sleep)


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "breadth_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Book(Base):
    __tablename__ = "breadth_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(80))
    author_id: Mapped[int] = mapped_column(ForeignKey("breadth_authors.id"))
    author: Mapped[Author] = relationship()
    reviews: Mapped[list[Review]] = relationship(order_by="Review.id")


class Review(Base):
    __tablename__ = "breadth_reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(ForeignKey("breadth_books.id"))
    stars: Mapped[int]


class Tag(Base):
    __tablename__ = "breadth_tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(ForeignKey("breadth_books.id"))
    name: Mapped[str] = mapped_column(String(30))


# Three different aggregates, no bound parameter, each ~60 ms: independent of each other. (The
# uncorrelated subquery runs once; its value, void or NULL, is not used.)
AGGREGATES = [
    f"SELECT count(*), (SELECT pg_sleep({PAUSE_S})) FROM breadth_authors",
    f"SELECT avg(stars), (SELECT pg_sleep({PAUSE_S})) FROM breadth_reviews",
    f"SELECT count(DISTINCT name), (SELECT pg_sleep({PAUSE_S})) FROM breadth_tags",
]
# Each needs what the one before returned (bound parameters): nothing to run concurrently.
CHAIN = [
    f"SELECT max(id), (SELECT pg_sleep({PAUSE_S})) FROM breadth_books",
    "SELECT author_id, (SELECT pg_sleep(:pause)) FROM breadth_books WHERE id = :value",
    "SELECT count(*), (SELECT pg_sleep(:pause)) FROM breadth_books WHERE author_id = :value",
]


def startup() -> None:
    """DDL, seed and a slow warm-up query, before the first request: no request to file them under."""
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.execute(insert(Author), [{"id": n, "name": f"author {n}"} for n in range(1, BOOKS + 1)])
        session.execute(
            insert(Book),
            [{"id": n, "title": f"book {n}", "author_id": (n % 5) + 1} for n in range(1, BOOKS + 1)],
        )
        session.execute(
            insert(Review),
            [
                {"book_id": book, "stars": (book + line) % 5 + 1}
                for book in range(1, BOOKS + 1)
                for line in range(2)
            ],
        )
        session.execute(
            insert(Tag),
            [
                {"book_id": book, "name": f"tag {(book + line) % 4}"}
                for book in range(1, BOOKS + 1)
                for line in range(2)
            ],
        )
    with engine.connect() as connection:  # a slow (250 ms) warm-up query: a finding outside any request
        connection.execute(text("SELECT count(*), (SELECT pg_sleep(0.25)) FROM breadth_books")).scalar()
    cache.flushdb()
    cache.mset({f"authors:{n}": f"author {n}" for n in range(1, BOOKS + 1)})


async def _aggregates_concurrently() -> list[Any]:
    async def run(statement: str) -> Any:
        async with AsyncSessions() as session:
            return (await session.execute(text(statement))).scalar()

    return list(await asyncio.gather(*(run(statement) for statement in AGGREGATES)))


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    startup()
    # The async pool's connections, as a running service has them: a database backend's first
    # queries (new process, cold catalog caches) can take 80 ms more on a loaded machine, which
    # would make the healthy concurrent endpoint's 60 ms queries look slow.
    await _aggregates_concurrently()
    yield
    # `aclose` from redis 5.0.1 on (where `close` is deprecated); `close` before it.
    await (async_cache.aclose() if hasattr(async_cache, "aclose") else async_cache.close())
    await async_engine.dispose()
    http.close()


app = FastAPI(title="detection breadth", lifespan=lifespan)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# --- what the app calls over HTTP (on itself) -----------------------------------------------------


@app.get("/catalog/items/{item_id}")
async def catalog_item(item_id: int) -> dict[str, int]:
    await asyncio.sleep(0.03)
    return {"id": item_id}


@app.get("/catalog/prices/{item_id}")
async def catalog_price(item_id: int) -> dict[str, int]:
    return {"id": item_id, "cents": item_id * 100}


@app.get("/upstream/{name}")
async def upstream(name: str) -> dict[str, str]:
    await asyncio.sleep(UPSTREAM_DELAY_S)
    return {"name": name}


# --- concurrent N+1 -------------------------------------------------------------------------------


async def _author_name(author_id: int) -> str | None:
    # ~20 ms of work in the database per query, as a round trip to a database server takes: with
    # SQLite's sub-millisecond queries the "concurrent" ones would barely overlap.
    pause = select(func.pg_sleep(0.02)).scalar_subquery()
    async with AsyncSessions() as session:
        return await session.scalar(select(Author.name, pause).where(Author.id == author_id))


@app.get("/concurrent/db")
async def concurrent_db() -> list[str | None]:
    """8 identical SELECTs at once, each on its own AsyncSession: still 8 round trips."""
    return list(await asyncio.gather(*(_author_name(n) for n in range(1, 9))))


@app.get("/concurrent/db-few")
async def concurrent_db_few() -> list[str | None]:
    return list(await asyncio.gather(*(_author_name(n) for n in range(1, 4))))


async def _fetch_items(count: int) -> list[Any]:
    async with httpx.AsyncClient(base_url=SELF_URL, timeout=10) as client:
        responses = await asyncio.gather(*(client.get(f"/catalog/items/{n}") for n in range(1, count + 1)))
    return [response.json() for response in responses]


@app.get("/concurrent/http")
async def concurrent_http() -> list[Any]:
    return await _fetch_items(10)


@app.get("/concurrent/http-few")
async def concurrent_http_few() -> list[Any]:
    return await _fetch_items(3)


# --- M+N: several different calls per item ------------------------------------------------------


async def _resolve_book(session: Any, book: Book) -> dict[str, Any]:
    """What a GraphQL resolver per field does: author, reviews and tags, one query each."""
    author = await session.scalar(select(Author.name).where(Author.id == book.author_id))
    stars = (await session.scalars(select(Review.stars).where(Review.book_id == book.id))).all()
    tags = (await session.scalars(select(Tag.name).where(Tag.book_id == book.id))).all()
    return {"title": book.title, "author": author, "stars": list(stars), "tags": list(tags)}


async def _resolve_books(limit: int) -> list[dict[str, Any]]:
    async with AsyncSessions() as session:
        books = (await session.scalars(select(Book).order_by(Book.id).limit(limit))).all()
        return [await _resolve_book(session, book) for book in books]


@app.get("/resolver/books")
async def resolver_books() -> list[dict[str, Any]]:
    return await _resolve_books(BOOKS)


@app.get("/resolver/books-few")
async def resolver_books_few() -> list[dict[str, Any]]:
    return await _resolve_books(2)


@app.get("/mixed/prices")
def mixed_prices() -> list[dict[str, Any]]:
    """Per item: its price from the pricing service, its title from the database."""
    out = []
    with Session(engine) as session:
        for item_id in range(1, 7):
            price = http.get(f"/catalog/prices/{item_id}").json()
            title = session.scalar(select(Book.title).where(Book.id == item_id))
            out.append({"title": title, "cents": price["cents"]})
    return out


# --- consecutive independent calls --------------------------------------------------------------


@app.get("/consecutive/db")
def consecutive_db() -> list[Any]:
    with Session(engine) as session:
        return [session.execute(text(statement)).scalar() for statement in AGGREGATES]


@app.get("/consecutive/db-concurrent")
async def consecutive_db_concurrent() -> list[Any]:
    return await _aggregates_concurrently()


@app.get("/consecutive/db-chain")
def consecutive_db_chain() -> list[Any]:
    with Session(engine) as session:
        book_id = session.execute(text(CHAIN[0])).scalar()
        author_id = session.execute(text(CHAIN[1]), {"value": book_id, "pause": PAUSE_S}).scalar()
        books = session.execute(text(CHAIN[2]), {"value": author_id, "pause": PAUSE_S}).scalar()
        return [book_id, author_id, books]


@app.get("/consecutive/http")
def consecutive_http() -> list[Any]:
    return [http.get(f"/upstream/{name}").json() for name in ("inventory", "pricing", "shipping")]


# --- Redis ----------------------------------------------------------------------------------------


def _decoded(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


@app.get("/cache/sync")
def cache_sync() -> list[str | None]:
    values = [cache.get(f"authors:{n}") for n in range(1, BOOKS + 1)]
    return [_decoded(value) for value in values]


@app.get("/cache/async")
async def cache_async() -> list[str | None]:
    values = [await async_cache.get(f"authors:{n}") for n in range(1, BOOKS + 1)]
    return [_decoded(value) for value in values]


@app.get("/cache/mget")
def cache_mget() -> list[str | None]:
    values = cache.mget([f"authors:{n}" for n in range(1, BOOKS + 1)])
    return [_decoded(value) for value in values]


# --- a connection per query -----------------------------------------------------------------------


@app.get("/connections/loop")
def connections_loop() -> list[str | None]:
    """`engine.connect()` per iteration: a `connect` span between each repeat of the query."""
    names = []
    for author_id in range(1, 9):
        with engine.connect() as connection:
            names.append(connection.scalar(select(Author.name).where(Author.id == author_id)))
    return names


# --- outside any request ---------------------------------------------------------------------------


def _nightly_report() -> None:
    with tracer.start_as_current_span("nightly-report"), Session(engine) as session:
        books = session.scalars(select(Book).order_by(Book.id)).all()
        for book in books:
            session.scalar(select(Author.name).where(Author.id == book.author_id))


def _bare_slow_query() -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT count(*), (SELECT pg_sleep(0.25)) FROM breadth_reviews")).scalar()


@app.get("/jobs/nightly-report")
def start_nightly_report() -> dict[str, str]:
    """Starts the job in its own thread (no request context there) and returns at once."""
    threading.Thread(target=_nightly_report, name="nightly-report").start()
    return {"started": "nightly-report"}


@app.get("/jobs/bare-query")
def start_bare_query() -> dict[str, str]:
    """A slow query in a thread of its own, with no span around it."""
    threading.Thread(target=_bare_slow_query, name="bare-query").start()
    return {"started": "bare-query"}


# --- healthy ---------------------------------------------------------------------------------------


@app.get("/healthy/eager")
def healthy_eager() -> list[dict[str, Any]]:
    with Session(engine) as session:
        books = session.scalars(
            select(Book).options(selectinload(Book.author), selectinload(Book.reviews)).order_by(Book.id)
        ).all()
        return [
            {"title": book.title, "author": book.author.name, "stars": [r.stars for r in book.reviews]}
            for book in books
        ]


@app.get("/healthy/single")
def healthy_single() -> dict[str, Any]:
    with Session(engine) as session:
        return {"authors": session.scalars(select(Author.name).order_by(Author.id)).all()}


# --- a mounted sub-application -----------------------------------------------------------------------

api = FastAPI(title="mounted API")


@api.get("/authors/{count}/names")
def mounted_author_loop(count: int) -> list[str | None]:
    """An N+1 behind `app.mount("/api", api)`: its operation is the whole route, not `GET /api`."""
    with Session(engine) as session:
        return [
            session.scalar(select(Author.name).where(Author.id == number)) for number in range(1, count + 1)
        ]


app.mount("/api", api)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")
