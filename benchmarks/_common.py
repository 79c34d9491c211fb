"""What every benchmark shares: the model, the three ways to reach the database, timing.

The project runs on `Database(url)` as configured by the library. The baselines are what a user
writes without it, on the same database file or server: a plain `create_engine(url)` with
SQLAlchemy's default settings, and the raw driver in autocommit mode (sqlite3 with
`isolation_level=None`, psycopg with `autocommit=True`: each statement is its own transaction,
no BEGIN or COMMIT, which is how Django runs outside `atomic()`).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, String, create_engine, insert, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import Repository
from uow import Database, UnitOfWork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class Base(DeclarativeBase):
    pass


class Person(Base):
    __tablename__ = "bench_people"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    age: Mapped[int] = mapped_column(default=0)


class BenchUnitOfWork(UnitOfWork):
    people: Repository[Person]


COLUMNS = "id, email, name, age"
_counter = itertools.count()


def fresh_email() -> str:
    return f"new{os.getpid()}-{next(_counter)}@example.com"


class Setup:
    """The project's Database and the two baselines' connections, on one database.

    On PostgreSQL each connects with its own application_name, so that the server's log tells
    their statements apart (see _wire.py).
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        if self.backend == "postgresql":
            self.db = Database(named(url, "bench-project"))
            self.plain: Engine = create_engine(named(url, "bench-plain"))
        else:
            self.db = Database(url)
            self.plain = create_engine(url)
        self.uow = BenchUnitOfWork(self.db)
        self.raw = Raw(url)
        self.url = parsed

    def reset(self) -> None:
        """Empty bench_people: drop and create it."""
        self.db.drop_all(Base.metadata)
        self.db.create_all(Base.metadata)

    def seed(self, count: int) -> None:
        with self.plain.begin() as connection:
            connection.execute(insert(Person), bulk_rows(count, "seed", name="seed"))

    def close(self) -> None:
        self.raw.close()
        self.plain.dispose()
        self.db.drop_all(Base.metadata)
        self.db.dispose()


class Raw:
    """The DBAPI driver in autocommit mode, with hand-written SQL."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            import sqlite3

            self.conn: Any = sqlite3.connect(parsed.database or "", isolation_level=None)
            self.p = "?"
            self.IntegrityError: type[Exception] = sqlite3.IntegrityError
            self.sqlite = True
        else:
            import psycopg

            conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            self.conn = psycopg.connect(conninfo, autocommit=True, application_name="bench-raw")
            self.p = "%s"
            self.IntegrityError = psycopg.IntegrityError
            self.sqlite = False

    def one(self, column: str, value: Any) -> Any:
        sql = f"SELECT {COLUMNS} FROM bench_people WHERE {column} = {self.p} ORDER BY id LIMIT 1"
        return self.conn.execute(sql, (value,)).fetchone()

    def insert(self, email: str) -> None:
        sql = f"INSERT INTO bench_people (email, name, age) VALUES ({self.p}, {self.p}, 0)"
        self.conn.execute(sql, (email, "x"))

    def in_transaction(self, fn: Callable[[Any], Any]) -> Any:
        """Run `fn(cursor)` inside one explicit transaction (for bulk work and streams)."""
        if not self.sqlite:
            with self.conn.transaction():
                return fn(self.conn.cursor())
        cursor = self.conn.cursor()
        cursor.execute("BEGIN")
        try:
            result = fn(cursor)
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
        return result

    def close(self) -> None:
        self.conn.close()


def named(url: str, application_name: str) -> str:
    parsed = make_url(url)
    tagged = parsed.update_query_dict({"application_name": application_name})
    return tagged.render_as_string(hide_password=False)


def bulk_rows(count: int, tag: str, name: str = "bulk") -> list[dict[str, Any]]:
    return [{"email": f"{tag}{i}@example.com", "name": name, "age": i % 90} for i in range(count)]


def best_of(fns: dict[str, Callable[[], Any]], number: int, rounds: int) -> dict[str, float]:
    """Seconds per call of each function: the best of `rounds` rounds of `number` calls.

    The functions take turns within each round, so a disturbance (another process on the
    machine, a checkpoint) hits them alike; the best round is the least disturbed one.
    """
    return asyncio.run(
        best_of_async({name: awaitable(fn) for name, fn in fns.items()}, number, rounds)
    )


async def best_of_async(
    fns: dict[str, Callable[[], Awaitable[Any]]], number: int, rounds: int
) -> dict[str, float]:
    """`best_of` inside the running event loop: each call of a function is awaited."""
    for fn in fns.values():
        await fn()  # warm up: statement compilation, the pool's first connection
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            for _ in range(number):
                await fn()
            best[name] = min(best[name], (time.perf_counter() - start) / number)
    return best


def awaitable(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """`fn` as a coroutine function (awaiting it costs a fraction of a microsecond)."""

    async def call() -> Any:
        return fn()

    return call
