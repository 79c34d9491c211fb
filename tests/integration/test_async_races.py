"""Race safety of the async get-or-create family with real concurrent callers (issues 11 and 12).

PostgreSQL, through asyncpg and async psycopg: 8 forked processes, each running several tasks on
one AsyncUnitOfWork object (as a container Singleton would); every task calls the method for
the same 150 keys in its own rotated order, each call its own unit of work, all processes
released together by a barrier. The sync races are tests/integration/test_races.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from repositories import AsyncRepository
from tests.integration.helpers import race_in_processes, rotated
from tests.integration.test_races import KEYS, METHODS, WORKERS, _row_counts
from tests.models import User
from uow import AsyncDatabase, AsyncUnitOfWork, Database

pytestmark = pytest.mark.slow  # real processes racing

TASKS = 3  # per process: 24 callers in all
DRIVERS = {"asyncpg": "postgresql+asyncpg", "psycopg": "postgresql+psycopg"}


class UsersUnitOfWork(AsyncUnitOfWork):
    users: AsyncRepository[User]


async def _call_each_key(uow: UsersUnitOfWork, method: str, caller: int) -> list[str]:
    """Call `method` once per key, each in its own unit of work; return the errors seen."""
    errors: list[str] = []
    values = {"name": f"w{caller}", "age": caller}
    for email in rotated(KEYS, caller, WORKERS * TASKS):
        try:
            async with uow:
                found = await getattr(uow.users, method)(email=email, defaults=values)
                user = found[0] if isinstance(found, tuple) else found  # (object, created)
                if user.email != email:
                    errors.append(f"{method}({email!r}) returned {user.email!r}")
        except Exception as error:  # every failure is counted, not just integrity errors
            errors.append(f"{type(error).__name__}: {error}")
    return errors


async def _tasks_of(adb: AsyncDatabase, method: str, worker: int) -> list[str]:
    uow = UsersUnitOfWork(adb)
    try:
        callers = range(worker * TASKS, (worker + 1) * TASKS)
        found = await asyncio.gather(*(_call_each_key(uow, method, c) for c in callers))
    finally:
        await adb.dispose()
    return [error for errors in found for error in errors]


def _process_main(adb: AsyncDatabase, method: str, worker: int, barrier: Any, results: Any) -> None:
    try:
        barrier.wait()
        errors = asyncio.run(_tasks_of(adb, method, worker))
    except Exception as error:  # report, so the parent never waits for a result forever
        errors = [f"worker crashed: {error!r}"]
    results.put(errors)


# Every method straight to the server; through PgBouncer, two (the sync race there takes all
# four): the pooler's traps are the driver's statements, whichever method sends them.
RACES = [
    *(pytest.param("postgresql", method, id=method) for method in [*METHODS, "update_or_create"]),
    *(
        pytest.param("pgbouncer-sync", method, id=f"pgbouncer-{method}")
        for method in ["first_or_create", "get_or_create"]
    ),
]


@pytest.mark.parametrize(("backend", "method"), RACES, indirect=["backend"])
@pytest.mark.parametrize("driver", list(DRIVERS))
def test_processes_of_racing_tasks_on_postgresql_leave_one_row_per_key_without_errors(
    db: Database, driver: str, method: str
) -> None:
    # Made in the parent, used in the children: nothing connects before the fork.
    adb = AsyncDatabase(
        db.url.set(drivername=DRIVERS[driver]), transaction_pooling=db.transaction_pooling
    )

    errors = race_in_processes(_process_main, (adb, method), WORKERS)

    assert errors == []
    assert _row_counts(db) == (len(KEYS), len(KEYS))
    with db.Session() as session:
        # Every row holds a consistent (name, age) pair, written by one caller's statement.
        pairs = session.execute(select(User.name, User.age)).all()
    assert all(name == f"w{age}" for name, age in pairs)
