"""A user's `main.py` whose API is a mounted sub-application, as many FastAPI projects are laid out
(`app.mount("/api", api)`, and a versioned API mounted in that): a fast endpoint, an N+1 and, two
mounts deep, another N+1. Behind a mount the instrumentation names every request after the mount
(`GET /api`); otel-perf must still see each endpoint on its own.

PORT; the SQLite database is created next to the app.
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI
from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

engine = create_engine("sqlite:///./mounted.db")


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))


Base.metadata.drop_all(engine)
Base.metadata.create_all(engine)
with Session(engine) as session:
    session.add_all(Author(id=number, name=f"author {number}") for number in range(1, 11))
    session.add_all(Book(id=number, title=f"book {number}", author_id=number) for number in range(1, 11))
    session.commit()

app = FastAPI(title="mounted")
api = FastAPI(title="api")
v1 = FastAPI(title="api v1")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@api.get("/authors/count")
def author_count() -> int:
    with Session(engine) as session:
        return len(session.scalars(select(Author.id)).all())


@api.get("/authors/{count}/names")
def author_names(count: int) -> list[str | None]:
    with Session(engine) as session:  # N+1: one query per author
        return [
            session.scalar(select(Author.name).where(Author.id == number)) for number in range(1, count + 1)
        ]


@v1.get("/books/{count}/titles")
def book_titles(count: int) -> list[str | None]:
    with Session(engine) as session:  # N+1: one query per book
        return [session.scalar(select(Book.title).where(Book.id == number)) for number in range(1, count + 1)]


api.mount("/v1", v1)
app.mount("/api", api)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
