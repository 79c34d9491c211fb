"""Race safety of bulk_create(update_conflicts=True) with real concurrent callers.

PostgreSQL: 8 processes, each upserting the same 150 keys several times, each time in its own
rotated order (the shape that deadlocks when rows lock in input order), released together by a
barrier. SQLite: the same with threads. No caller may fail, and every key ends as one row
holding one caller's consistent values.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.test_races import KEYS, WORKERS, _race_in_processes, _rotated, _row_counts
from tests.models import AppUnitOfWork, User
from uow import Database

pytestmark = pytest.mark.slow  # real processes racing or working

ROUNDS = 3


def _upsert_every_key(db: Database, batch_size: int | None, worker: int) -> list[str]:
    """Upsert all keys ROUNDS times, each in one bulk_create; the errors seen."""
    uow = AppUnitOfWork(db)
    errors: list[str] = []
    emails = _rotated(worker)
    for round_ in range(ROUNDS):
        rows = [{"email": email, "name": f"w{worker}", "age": worker} for email in emails]
        try:
            with uow:
                users = uow.users.bulk_create(
                    rows,
                    batch_size=batch_size,
                    update_conflicts=True,
                    unique_fields=["email"],
                    update_fields=["name", "age"],
                )
                # Each caller gets back the rows as its own statement left them, in its order.
                if [(u.email, u.name, u.age) for u in users] != [
                    (row["email"], row["name"], row["age"]) for row in rows
                ]:
                    errors.append(f"worker {worker}, round {round_}: wrong objects returned")
        except Exception as error:  # every failure is counted: deadlocks, unique violations
            errors.append(f"{type(error).__name__}: {error}")
    return errors


def _process_main(db: Database, batch_size: str, worker: int, barrier: Any, results: Any) -> None:
    try:
        barrier.wait()
        errors = _upsert_every_key(db, int(batch_size) if batch_size else None, worker)
    except Exception as error:  # report, so the parent never waits for a result forever
        errors = [f"worker crashed: {error!r}"]
    results.put(errors)


def _check_rows(db: Database) -> None:
    assert _row_counts(db) == (len(KEYS), len(KEYS))
    with db.Session() as session:
        pairs = session.execute(select(User.name, User.age)).all()
    # Every row holds a consistent (name, age) pair written by one worker's statement.
    assert all(name == f"w{age}" for name, age in pairs)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("batch_size", ["", "40"], ids=["one statement", "batches of 40"])
def test_processes_upserting_the_same_keys_on_postgresql_never_fail_nor_deadlock(
    db: Database, batch_size: str
) -> None:
    errors = _race_in_processes(db, _process_main, batch_size)

    assert errors == []
    _check_rows(db)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_threads_upserting_the_same_keys_on_sqlite_never_fail(db: Database) -> None:
    barrier = threading.Barrier(WORKERS)
    errors: list[str] = []

    def run(worker: int) -> None:
        barrier.wait()
        errors.extend(_upsert_every_key(db, None, worker))

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    _check_rows(db)
