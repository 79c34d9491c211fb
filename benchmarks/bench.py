"""Per-operation cost of the repository API against plain SQLAlchemy 2.x and the raw driver.

    make bench                       # SQLite file + a throwaway PostgreSQL (scripts/with-postgres)
    python benchmarks/bench.py [--quick] [URL ...]

Each per-op measurement runs the operation in its own unit of work (project), its own
`with Session() as s, s.begin()` (SQLAlchemy) or its own BEGIN/COMMIT (raw driver), many times,
and reports the median of several rounds in microseconds per operation. Bulk and streaming are
timed once per round. The ratios are project / SQLAlchemy and project / raw driver, measured in
the same run on the same database.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import String, insert, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import Repository
from uow import Database, UnitOfWork

if TYPE_CHECKING:
    from collections.abc import Callable


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


SEED = 2000
_counter = itertools.count()


def fresh_email() -> str:
    return f"new{os.getpid()}-{next(_counter)}@example.com"


def timed(fn: Callable[[], Any], number: int, rounds: int) -> float:
    """Median seconds per call over `rounds` rounds of `number` calls."""
    fn()  # warm caches (statement compilation, pool)
    results = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        results.append((time.perf_counter() - start) / number)
    return statistics.median(results)


class Raw:
    """The same operations with the DBAPI driver and hand-written SQL."""

    def __init__(self, db: Database) -> None:
        self.dialect = db.engine.dialect.name
        if self.dialect == "sqlite":
            import sqlite3

            self.conn: Any = sqlite3.connect(db.url.database or "", isolation_level=None)
            self.p = "?"
        else:
            import psycopg

            url = db.url
            self.conn = psycopg.connect(
                host=url.host, port=url.port, user=url.username, dbname=url.database
            )
            self.p = "%s"

    def _tx(self, fn: Callable[[Any], Any]) -> Any:
        cur = self.conn.cursor()
        if self.dialect == "sqlite":
            cur.execute("BEGIN IMMEDIATE")
            try:
                result = fn(cur)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            return result
        with self.conn.transaction():
            return fn(cur)

    def get(self, pk: int) -> Any:
        sql = f"SELECT id, email, name, age FROM bench_people WHERE id = {self.p}"
        return self._tx(lambda c: c.execute(sql, (pk,)).fetchone())

    def first(self, email: str) -> Any:
        sql = (
            f"SELECT id, email, name, age FROM bench_people WHERE email = {self.p} "
            "ORDER BY id LIMIT 1"
        )
        return self._tx(lambda c: c.execute(sql, (email,)).fetchone())

    def create(self, email: str) -> Any:
        sql = f"INSERT INTO bench_people (email, name, age) VALUES ({self.p}, {self.p}, 0)"
        return self._tx(lambda c: c.execute(sql, (email, "x")))

    def bulk(self, rows: list[dict[str, Any]]) -> Any:
        sql = f"INSERT INTO bench_people (email, name, age) VALUES ({self.p}, {self.p}, {self.p})"
        params = [(r["email"], r["name"], r["age"]) for r in rows]
        return self._tx(lambda c: c.executemany(sql, params))

    def stream(self) -> int:
        def run(cur: Any) -> int:
            count = 0
            if self.dialect == "postgresql":
                cur = self.conn.cursor(name="stream")  # server-side cursor
            cur.execute("SELECT id, email, name, age FROM bench_people")
            while rows := cur.fetchmany(1000):
                count += len(rows)
            return count

        return int(self._tx(run))

    def close(self) -> None:
        self.conn.close()


def per_op_table(db: Database, quick: bool) -> list[tuple[str, float, float, float]]:
    number, rounds = (100, 3) if quick else (400, 5)
    uow = BenchUnitOfWork(db)
    raw = Raw(db)
    Session = db.Session
    pk, email = SEED // 2, f"seed{SEED // 2}@example.com"

    def sa_get() -> None:
        with Session() as s, s.begin():
            s.get(Person, pk)

    def uow_get() -> None:
        with uow:
            uow.people.get(pk)

    def sa_first() -> None:
        with Session() as s, s.begin():
            s.scalars(
                select(Person).where(Person.email == email).order_by(Person.id).limit(1)
            ).first()

    def uow_first() -> None:
        with uow:
            uow.people.first(email=email)

    def sa_create() -> None:
        with Session() as s, s.begin():
            s.add(Person(email=fresh_email(), name="x"))

    def uow_create() -> None:
        with uow:
            uow.people.create(email=fresh_email(), name="x")

    def sa_first_or_create(address: str) -> None:
        with Session() as s, s.begin():
            found = s.scalars(
                select(Person).where(Person.email == address).order_by(Person.id).limit(1)
            ).first()
            if found is None:
                s.flush()
                with s.begin_nested():
                    s.add(Person(email=address, name="x"))
                    s.flush()

    def uow_first_or_create(address: str) -> None:
        with uow:
            uow.people.first_or_create(email=address, defaults={"name": "x"})

    def sa_create_or_first() -> None:
        with Session() as s, s.begin():
            try:
                with s.begin_nested():
                    s.add(Person(email=email, name="x"))
                    s.flush()
            except IntegrityError:
                s.scalars(
                    select(Person).where(Person.email == email).order_by(Person.id).limit(1)
                ).first()

    def uow_create_or_first() -> None:
        with uow:
            uow.people.create_or_first(email=email, defaults={"name": "x"})

    rows: list[tuple[str, float, float, float]] = []

    def measure(name: str, raw_fn: Callable[[], Any] | None, sa_fn: Any, uow_fn: Any) -> None:
        raw_t = timed(raw_fn, number, rounds) if raw_fn else float("nan")
        sa_t = timed(sa_fn, number, rounds)
        uow_t = timed(uow_fn, number, rounds)
        rows.append((name, raw_t, sa_t, uow_t))

    measure("get by pk", lambda: raw.get(pk), sa_get, uow_get)
    measure("first by unique column", lambda: raw.first(email), sa_first, uow_first)
    measure("create + commit", lambda: raw.create(fresh_email()), sa_create, uow_create)
    measure(
        "first_or_create hit",
        lambda: raw.first(email),
        lambda: sa_first_or_create(email),
        lambda: uow_first_or_create(email),
    )
    measure(
        "first_or_create miss",
        None,
        lambda: sa_first_or_create(fresh_email()),
        lambda: uow_first_or_create(fresh_email()),
    )
    measure("create_or_first conflict", None, sa_create_or_first, uow_create_or_first)
    raw.close()
    return rows


def reset(db: Database) -> None:
    db.drop_all(Base.metadata)
    db.create_all(Base.metadata)


def seed(db: Database, count: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            insert(Person),
            [
                {"email": f"seed{i}@example.com", "name": "seed", "age": i % 90}
                for i in range(count)
            ],
        )


def bulk_rows(count: int, tag: str) -> list[dict[str, Any]]:
    return [{"email": f"{tag}{i}@example.com", "name": "bulk", "age": i % 90} for i in range(count)]


def bulk_table(db: Database, quick: bool) -> list[tuple[str, float, float, float]]:
    count = 20_000 if quick else 100_000
    uow = BenchUnitOfWork(db)
    times: dict[str, list[float]] = {"raw": [], "core": [], "orm": [], "uow": [], "uow_rows": []}
    for round_ in range(2 if quick else 3):
        for kind in times:
            reset(db)
            rows = bulk_rows(count, f"{kind}{round_}-")
            gc.collect()
            start = time.perf_counter()
            if kind == "raw":
                raw = Raw(db)
                raw.bulk(rows)
                raw.close()
            elif kind == "core":
                with db.engine.begin() as conn:
                    conn.execute(insert(Person), rows)
            elif kind == "orm":
                # SQLAlchemy's fastest way to get ORM objects back from a bulk INSERT.
                with db.Session() as s, s.begin():
                    returning = insert(Person).returning(Person, sort_by_parameter_order=True)
                    s.scalars(returning, rows).all()
            else:
                with uow:
                    uow.people.bulk_create(rows, return_objects=kind == "uow")
            times[kind].append(time.perf_counter() - start)
    raw_t, core_t, orm_t, uow_t, rows_t = (min(times[k]) for k in times)
    name = f"bulk_create {count:,} rows"
    return [
        (f"{name}, objects returned (s), vs Core executemany", raw_t, core_t, uow_t),
        (f"{name}, objects returned (s), vs ORM insert().returning(Model)", raw_t, orm_t, uow_t),
        (f"{name}, return_objects=False (s), vs Core executemany", raw_t, core_t, rows_t),
    ]


def bulk_floor(db: Database, quick: bool) -> list[tuple[str, float]]:
    """The two costs any object-returning bulk insert pays, each measured on its own.

    Getting the keys back needs INSERT ... RETURNING, and every returned object is an
    instrumented instance built the way SQLAlchemy's loader builds one (no `__init__`). If
    either alone exceeds 1.2x Core's executemany, no object-returning `bulk_create` can meet it.
    """
    count = 20_000 if quick else 100_000
    manager = inspect(Person).class_manager
    keys_returned = insert(Person).returning(Person.id)

    def build(rows: list[dict[str, Any]]) -> None:
        objects = []
        for row in rows:
            obj = manager.new_instance()
            obj.__dict__.update(row)
            objects.append(obj)

    def core(rows: list[dict[str, Any]]) -> None:
        with db.engine.begin() as conn:
            conn.execute(insert(Person), rows)

    def core_keys(rows: list[dict[str, Any]]) -> None:
        with db.engine.begin() as conn:
            conn.execute(keys_returned, rows).all()

    steps: dict[str, Callable[[list[dict[str, Any]]], None]] = {
        "Core insert() executemany, nothing returned": core,
        "Core insert().returning(Person.id), keys only": core_keys,
        f"build {count:,} mapped objects, no SQL": build,
    }
    best: dict[str, float] = {}
    for round_ in range(2 if quick else 3):
        for index, (name, step) in enumerate(steps.items()):
            reset(db)
            rows = bulk_rows(count, f"floor{index}-{round_}-")
            gc.collect()
            start = time.perf_counter()
            step(rows)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    return list(best.items())


def stream_table(db: Database, quick: bool) -> tuple[list[tuple[str, float, float, float]], float]:
    count = 50_000 if quick else 200_000
    reset(db)
    seed(db, count)
    uow = BenchUnitOfWork(db)

    def sa_stream() -> int:
        with db.Session() as s, s.begin():
            statement = select(Person).execution_options(yield_per=1000)
            return sum(1 for _ in s.scalars(statement))

    def uow_stream() -> int:
        with uow:
            return sum(1 for _ in uow.people.iterator(chunk_size=1000))

    raw = Raw(db)
    speeds = []
    for fn in (raw.stream, sa_stream, uow_stream):
        gc.collect()
        start = time.perf_counter()
        assert fn() == count
        speeds.append(count / (time.perf_counter() - start))
    raw.close()

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    uow_stream()
    growth = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    tracemalloc.stop()
    name = f"stream {count:,} rows (rows/s)"
    return [(name, speeds[0], speeds[1], speeds[2])], growth


def run(url: str, quick: bool) -> None:
    db = Database(url)
    backend = db.engine.dialect.name
    reset(db)
    seed(db, SEED)
    per_op = per_op_table(db, quick)
    bulk = bulk_table(db, quick)
    floor = bulk_floor(db, quick)
    stream, growth = stream_table(db, quick)
    reset(db)
    db.drop_all(Base.metadata)
    db.dispose()

    print(f"\n## {backend}  ({db.url.render_as_string(hide_password=True)})\n")
    print("| operation | raw driver | SQLAlchemy | project | project/SQLAlchemy | project/raw |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, raw_t, sa_t, uow_t in per_op:
        print(
            f"| {name} (µs/op) | {raw_t * 1e6:.0f} | {sa_t * 1e6:.0f} | {uow_t * 1e6:.0f} "
            f"| {uow_t / sa_t:.2f}x | {uow_t / raw_t:.2f}x |"
        )
    for name, raw_t, core_t, uow_t in bulk:
        print(
            f"| {name} | {raw_t:.2f} | {core_t:.2f} | {uow_t:.2f} "
            f"| {uow_t / core_t:.2f}x | {uow_t / raw_t:.2f}x |"
        )
    for name, raw_s, sa_s, uow_s in stream:
        print(
            f"| {name} | {raw_s:,.0f} | {sa_s:,.0f} | {uow_s:,.0f} "
            f"| {sa_s / uow_s:.2f}x | {raw_s / uow_s:.2f}x |"
        )
    print("\nRatios are time ratios: above 1.00x the project is slower.")
    print(f"\nStreaming peak memory growth (tracemalloc): {growth:.1f} MiB")
    print("\nWhat returning objects costs at least (each step alone, seconds):\n")
    print("| step | seconds | / Core executemany |")
    print("|---|---:|---:|")
    core_t = floor[0][1]
    for name, seconds in floor:
        print(f"| {name} | {seconds:.2f} | {seconds / core_t:.2f}x |")
    least = sum(seconds for _, seconds in floor[1:])
    print(f"| keys returned + objects built (sum) | {least:.2f} | {least / core_t:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", help="database URLs (default: a temp SQLite file)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and rows")
    args = parser.parse_args()
    urls = list(args.urls)
    if not urls:
        urls.append(f"sqlite:///{tempfile.mkdtemp()}/bench.db")
        if os.environ.get("UOW_TEST_POSTGRES_URL"):
            urls.append(os.environ["UOW_TEST_POSTGRES_URL"])
    for url in urls:
        run(url, args.quick)


if __name__ == "__main__":
    main()
