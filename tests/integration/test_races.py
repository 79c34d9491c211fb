"""Race safety of the get-or-create family with real concurrent callers.

PostgreSQL: 8 processes, each calling the method for the same 150 keys in a rotated order, all
released together by a barrier, each call its own unit of work. SQLite: the same with threads
(SQLite serialises writers on its database lock; "database is locked" counts as an error).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.integration.helpers import race_in_processes, rotated
from tests.models import AppUnitOfWork, User
from uow import Database

pytestmark = pytest.mark.slow  # real processes racing or working

WORKERS = 8
KEYS = [f"user{n:03d}@example.com" for n in range(150)]
METHODS = ["first_or_create", "create_or_first", "get_or_create"]
# The same race through PgBouncer in transaction pooling mode (tests/pgbouncer_server.py).
THROUGH_PGBOUNCER = pytest.param("pgbouncer-sync", id="pgbouncer")


def _rotated(worker: int) -> list[str]:
    return rotated(KEYS, worker, WORKERS)


def _call_each_key(db: Database, method: str, worker: int, wait: Callable[[], Any]) -> list[str]:
    """Call `method` once per key, each in its own unit of work; return the errors seen."""
    uow = AppUnitOfWork(db)
    errors: list[str] = []
    wait()
    for email in _rotated(worker):
        try:
            with uow:
                found = getattr(uow.users, method)(email=email, defaults={"name": f"w{worker}"})
                user = found[0] if isinstance(found, tuple) else found  # get_or_create's pair
                assert user.email == email
        except Exception as error:  # every failure is counted, not just integrity errors
            errors.append(f"{type(error).__name__}: {error}")
    return errors


def _process_main(db: Database, method: str, worker: int, barrier: Any, results: Any) -> None:
    try:
        errors = _call_each_key(db, method, worker, barrier.wait)
    except Exception as error:  # report, so the parent never waits for a result forever
        errors = [f"worker crashed: {error!r}"]
    results.put(errors)


def _row_counts(db: Database) -> tuple[int, int]:
    with db.Session() as session:
        total = session.scalar(select(func.count()).select_from(User))
        distinct = session.scalar(select(func.count(func.distinct(User.email))))
    return int(total or 0), int(distinct or 0)


def _race_in_processes(db: Database, target: Callable[..., None], method: str = "") -> list[str]:
    """Run `target` in WORKERS forked processes released by one barrier; all their errors."""
    db.dispose()  # children start from an empty pool either way; keep the parent's clean
    return race_in_processes(target, (db, method), WORKERS)


@pytest.mark.parametrize("backend", ["postgresql", THROUGH_PGBOUNCER], indirect=True)
@pytest.mark.parametrize("method", METHODS)
def test_processes_racing_on_postgresql_create_each_row_once_without_errors(
    db: Database, method: str
) -> None:
    errors = _race_in_processes(db, _process_main, method)

    assert errors == []
    assert _row_counts(db) == (len(KEYS), len(KEYS))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("method", METHODS)
def test_threads_racing_on_sqlite_create_each_row_once_without_errors(
    db: Database, method: str
) -> None:
    barrier = threading.Barrier(WORKERS)
    errors: list[str] = []

    def run(worker: int) -> None:
        errors.extend(_call_each_key(db, method, worker, barrier.wait))

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert _row_counts(db) == (len(KEYS), len(KEYS))


def _update_or_create_each_key(
    db: Database, _method: str, worker: int, barrier: Any, results: Any
) -> None:
    uow = AppUnitOfWork(db)
    errors: list[str] = []
    barrier.wait()
    for email in _rotated(worker):
        try:
            with uow:
                uow.users.update_or_create(
                    email=email, defaults={"name": f"w{worker}", "age": worker}
                )
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
    results.put(errors)


@pytest.mark.parametrize("backend", ["postgresql", THROUGH_PGBOUNCER], indirect=True)
def test_processes_racing_update_or_create_on_postgresql_leave_one_row_per_key(
    db: Database,
) -> None:
    errors = _race_in_processes(db, _update_or_create_each_key)

    assert errors == []
    assert _row_counts(db) == (len(KEYS), len(KEYS))
    with db.Session() as session:
        # Every row holds a consistent (name, age) pair written by one worker's update.
        pairs = session.execute(select(User.name, User.age)).all()
    assert all(name == f"w{age}" for name, age in pairs)
