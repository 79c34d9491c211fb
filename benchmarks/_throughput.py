"""Many rows at once: bulk inserts and streams, each timed as a whole, best of a few rounds."""

from __future__ import annotations

import gc
import time
import tracemalloc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from _common import COLUMNS, Person, Setup, bulk_rows
from sqlalchemy import insert, inspect, select
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class Throughput:
    name: str
    baseline: str  # what the SQLAlchemy column holds
    raw: float
    plain: float
    project: float


def bulk(setup: Setup, quick: bool) -> tuple[int, dict[str, float]]:
    """Seconds to insert `count` rows, each way, into an empty table."""
    count = 20_000 if quick else 100_000
    uow, engine, raw = setup.uow, setup.plain, setup.raw
    returning = insert(Person).returning(Person, sort_by_parameter_order=True)
    sql = f"INSERT INTO bench_people (email, name, age) VALUES ({raw.p}, {raw.p}, {raw.p})"

    def raw_executemany(rows: list[dict[str, Any]]) -> None:
        params = [(r["email"], r["name"], r["age"]) for r in rows]
        raw.in_transaction(lambda cursor: cursor.executemany(sql, params))

    def core(rows: list[dict[str, Any]]) -> None:
        with engine.begin() as connection:
            connection.execute(insert(Person), rows)

    def orm_returning(rows: list[dict[str, Any]]) -> None:
        # SQLAlchemy's fastest way to get ORM objects back from a bulk INSERT.
        with Session(engine) as s, s.begin():
            s.scalars(returning, rows).all()

    def project(rows: list[dict[str, Any]]) -> None:
        with uow:
            uow.people.bulk_create(rows)

    def project_rows(rows: list[dict[str, Any]]) -> None:
        with uow:
            uow.people.bulk_create(rows, return_objects=False)

    steps = {
        "raw": raw_executemany,
        "core": core,
        "orm_returning": orm_returning,
        "project": project,
        "project_rows": project_rows,
    }
    return count, _best_insert(setup, steps, count, rounds=2 if quick else 3)


def bulk_floor(setup: Setup, quick: bool) -> tuple[int, dict[str, float]]:
    """The two costs any object-returning bulk insert pays, each measured on its own.

    Getting the keys back needs INSERT ... RETURNING, and every returned object is an
    instrumented instance built the way SQLAlchemy's loader builds one (no `__init__`). If
    either alone exceeds a target, no object-returning `bulk_create` can meet it.
    """
    count = 20_000 if quick else 100_000
    engine = setup.plain
    manager = inspect(Person).class_manager
    keys_returned = insert(Person).returning(Person.id)

    def build(rows: list[dict[str, Any]]) -> None:
        objects = []
        for row in rows:
            obj = manager.new_instance()
            obj.__dict__.update(row)
            objects.append(obj)

    def core(rows: list[dict[str, Any]]) -> None:
        with engine.begin() as connection:
            connection.execute(insert(Person), rows)

    def core_keys(rows: list[dict[str, Any]]) -> None:
        with engine.begin() as connection:
            connection.execute(keys_returned, rows).all()

    steps = {
        "Core insert() executemany, nothing returned": core,
        "Core insert().returning(Person.id), keys only": core_keys,
        f"build {count:,} mapped objects, no SQL": build,
    }
    return count, _best_insert(setup, steps, count, rounds=2 if quick else 3)


def _best_insert(
    setup: Setup,
    steps: dict[str, Callable[[list[dict[str, Any]]], None]],
    count: int,
    rounds: int,
) -> dict[str, float]:
    best = dict.fromkeys(steps, float("inf"))
    for round_ in range(rounds):
        for index, (name, step) in enumerate(steps.items()):
            setup.reset()
            rows = bulk_rows(count, f"b{index}-{round_}-")
            gc.collect()
            start = time.perf_counter()
            step(rows)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def stream(setup: Setup, quick: bool) -> tuple[Throughput, float]:
    """Rows per second streamed each way, and the project's peak memory growth in MiB."""
    count = 50_000 if quick else 200_000
    setup.reset()
    setup.seed(count)
    uow, engine, raw = setup.uow, setup.plain, setup.raw

    def raw_stream() -> int:
        def run(cursor: Any) -> int:
            if not raw.sqlite:
                cursor = raw.conn.cursor(name="stream")  # a server-side cursor
            cursor.execute(f"SELECT {COLUMNS} FROM bench_people")
            total = 0
            while rows := cursor.fetchmany(1000):
                total += len(rows)
            return total

        return int(raw.in_transaction(run))

    def plain_stream() -> int:
        with Session(engine) as s:
            statement = select(Person).execution_options(yield_per=1000)
            return sum(1 for _ in s.scalars(statement))

    def project_stream() -> int:
        with uow:
            return sum(1 for _ in uow.people.iterator(chunk_size=1000))

    fns = {"raw": raw_stream, "plain": plain_stream, "project": project_stream}
    best = dict.fromkeys(fns, 0.0)
    for _ in range(2 if quick else 3):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            if fn() != count:
                raise RuntimeError(f"{name} streamed the wrong number of rows")
            best[name] = max(best[name], count / (time.perf_counter() - start))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    project_stream()
    growth = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    tracemalloc.stop()
    name = f"stream {count:,} rows (rows/s)"
    baseline = "ORM select(Person), yield_per=1000"
    return Throughput(name, baseline, best["raw"], best["plain"], best["project"]), growth
