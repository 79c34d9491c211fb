"""`uow.run()`: a block that lost a race (serialization failure, deadlock) runs again.

PostgreSQL gives real serialization failures (SERIALIZABLE, REPEATABLE READ) and deadlocks;
SQLite has neither, so there the tests prove only that run() runs the block once, commits it,
and raises other errors at once. The races are real: processes or tasks released together.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from tests.async_facade import async_url
from tests.integration.helpers import race_in_processes
from tests.models import AppUnitOfWork, User
from uow import AsyncDatabase, AsyncUnitOfWork, Database, UnitOfWorkError, is_retryable

WORKERS = 8
INCREMENTS = 30
COUNTER = "counter@example.com"
OTHER = "other@example.com"

postgresql = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture
def serializable(db: Database) -> Iterator[Database]:
    """A second Database over `db`'s (fresh) database whose transactions are SERIALIZABLE, with
    two users: the counter (age 0) and another."""
    with db.Session.begin() as session:
        session.add_all([User(email=COUNTER, name="c", age=0), User(email=OTHER, name="o", age=0)])
    database = Database(db.url, engine_options={"isolation_level": "SERIALIZABLE"})
    try:
        yield database
    finally:
        database.dispose()


def _ages(db: Database) -> dict[str, int | None]:
    with db.Session() as session:
        return {user.email: user.age for user in session.scalars(select(User))}


def _increment(uow: AppUnitOfWork, attempts: list[int]) -> int:
    """Read the counter and write it back plus one: a read-modify-write that races."""
    attempts.append(1)
    user = uow.users.filter(email=COUNTER).one()
    user.age = (user.age or 0) + 1
    uow.session.flush()
    return user.age


def _bump_elsewhere(db: Database, email: str) -> None:
    """Commit an increment of `email`'s age on another connection, now."""
    with db.engine.begin() as connection:
        connection.execute(update(User).where(User.email == email).values(age=User.age + 1))


# -- validation and blocks ----------------------------------------------------------------------


def test_run_commits_the_block_and_returns_what_the_function_returned(db: Database) -> None:
    uow = AppUnitOfWork(db)
    attempts: list[int] = []

    def register(email: str, *, name: str) -> int:
        attempts.append(1)
        return uow.users.create(email=email, name=name).id

    user_id = uow.run(register, "ada@example.com", name="Ada")

    assert attempts == [1]
    assert _ages(db) == {"ada@example.com": None}
    with uow:
        assert uow.users.get(user_id) is not None


def test_a_non_retryable_error_is_raised_at_once_and_rolled_back(db: Database) -> None:
    uow = AppUnitOfWork(db)
    attempts: list[int] = []
    ran: list[str] = []

    def duplicate() -> None:
        attempts.append(1)
        uow.on_commit(lambda: ran.append("callback"))
        uow.users.create(email="twin@example.com", name="one")
        uow.users.create(email="twin@example.com", name="two")
        uow.session.flush()

    with pytest.raises(IntegrityError) as raised:
        uow.run(duplicate, retries=5)

    assert attempts == [1]
    assert ran == []
    assert not is_retryable(raised.value)
    assert _ages(db) == {}


def test_run_inside_an_open_block_raises_before_running_anything(db: Database) -> None:
    uow = AppUnitOfWork(db)
    attempts: list[int] = []
    with uow, pytest.raises(UnitOfWorkError, match="inside an open block"):
        uow.run(attempts.append, 1)
    assert attempts == []


@pytest.mark.parametrize(
    ("retries", "error"), [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)]
)
def test_bad_retries_are_refused_before_anything_runs(
    db: Database, retries: Any, error: type[Exception]
) -> None:
    attempts: list[int] = []
    with pytest.raises(error, match="retries"):
        AppUnitOfWork(db).run(attempts.append, 1, retries=retries)
    assert attempts == []


def test_a_coroutine_function_is_refused_by_the_sync_run(db: Database) -> None:
    async def work() -> None:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="AsyncUnitOfWork"):
        AppUnitOfWork(db).run(work)


def test_is_retryable_is_false_for_errors_without_a_retryable_sqlstate() -> None:
    assert not is_retryable(ValueError("no"))
    assert not is_retryable(UnitOfWorkError("no cause"))


# -- serialization failures and deadlocks (PostgreSQL) ------------------------------------------


@postgresql
def test_a_serialization_failure_is_retried_and_only_the_committed_attempt_runs_callbacks(
    serializable: Database,
) -> None:
    uow = AppUnitOfWork(serializable)
    attempts: list[int] = []
    ran: list[int] = []
    errors: list[BaseException] = []

    def work() -> int:
        attempt = len(attempts) + 1
        uow.on_commit(lambda: ran.append(attempt))
        uow.users.filter(email=COUNTER).one()  # the snapshot is taken here
        if attempt == 1:
            _bump_elsewhere(serializable, COUNTER)  # a concurrent update commits first
        try:
            return _increment(uow, attempts)
        except OperationalError as error:
            errors.append(error)
            raise

    assert uow.run(work) == 2

    assert len(attempts) == 2
    assert ran == [2]
    assert [getattr(error.orig, "sqlstate", None) for error in errors] == ["40001"]
    assert is_retryable(errors[0])
    assert _ages(serializable)[COUNTER] == 2


@postgresql
def test_a_serialization_failure_at_commit_is_retried(serializable: Database) -> None:
    """Write skew: each transaction reads the row the other writes. The other one commits
    first, so this block's COMMIT (not a statement) fails."""
    uow = AppUnitOfWork(serializable)
    finished: list[int] = []

    def work() -> None:
        session = uow.session
        session.execute(select(User.age).where(User.email == COUNTER)).all()
        session.execute(update(User).where(User.email == OTHER).values(age=User.age + 1))
        if not finished:
            with serializable.engine.begin() as other:
                other.execute(select(User.age).where(User.email == OTHER)).all()
                other.execute(update(User).where(User.email == COUNTER).values(age=User.age + 1))
        finished.append(1)

    uow.run(work)

    assert len(finished) == 2  # the first attempt ran to its end: its COMMIT failed
    assert _ages(serializable) == {COUNTER: 1, OTHER: 1}


@postgresql
def test_a_failure_caught_inside_the_block_is_retried_through_the_refused_commit(
    serializable: Database,
) -> None:
    """The block catches the serialization failure and goes on: the library refuses to commit
    the aborted transaction (UnitOfWorkError, caused by the failure), and run() retries."""
    uow = AppUnitOfWork(serializable)
    attempts: list[int] = []
    refused: list[BaseException] = []

    def swallows() -> None:
        uow.users.filter(email=COUNTER).one()
        if len(attempts) < 2:  # the first attempt of each run() loses the race
            _bump_elsewhere(serializable, COUNTER)
        with contextlib.suppress(OperationalError):  # a mistake, but a common one
            _increment(uow, attempts)

    def run_and_keep_the_refusal() -> None:
        try:
            uow.run(swallows, retries=0)
        except UnitOfWorkError as error:
            refused.append(error)
        uow.run(swallows)

    run_and_keep_the_refusal()

    assert len(refused) == 1
    assert is_retryable(refused[0])
    assert len(attempts) == 3  # refused once with retries=0; then a failed and a good attempt
    assert _ages(serializable)[COUNTER] == 3


@postgresql
def test_retries_run_out_and_the_last_error_is_raised(serializable: Database) -> None:
    uow = AppUnitOfWork(serializable)
    attempts: list[int] = []

    def always_loses() -> None:
        uow.users.filter(email=COUNTER).one()
        _bump_elsewhere(serializable, COUNTER)
        _increment(uow, attempts)

    with pytest.raises(OperationalError) as raised:
        uow.run(always_loses, retries=2)

    assert len(attempts) == 3
    assert is_retryable(raised.value)
    assert _ages(serializable)[COUNTER] == 3  # only the other connection's increments


@postgresql
def test_a_deadlock_is_retried_and_both_blocks_succeed(
    serializable: Database, db: Database
) -> None:
    """Two threads lock the two rows in opposite orders; a barrier makes sure each holds its
    first row before either asks for its second. PostgreSQL aborts one (40P01), which runs
    again once the other has committed."""
    uow = AppUnitOfWork(db)  # READ COMMITTED: the deadlock, not a serialization failure
    barrier = threading.Barrier(2, timeout=30)
    attempts: dict[str, int] = {"first": 0, "second": 0}
    failures: list[BaseException] = []

    def lock_both(name: str, first: str, second: str) -> None:
        attempts[name] += 1
        uow.session.execute(update(User).where(User.email == first).values(age=User.age + 1))
        if attempts[name] == 1:
            barrier.wait()
        uow.session.execute(update(User).where(User.email == second).values(age=User.age + 1))

    def thread_main(name: str, first: str, second: str) -> None:
        try:
            uow.run(lock_both, name, first, second)
        except BaseException as error:
            failures.append(error)

    threads = [
        threading.Thread(target=thread_main, args=("first", COUNTER, OTHER)),
        threading.Thread(target=thread_main, args=("second", OTHER, COUNTER)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    assert sorted(attempts.values()) == [1, 2]
    assert _ages(db) == {COUNTER: 2, OTHER: 2}


def _race_worker(url: Any, worker: int, barrier: Any, results: Any) -> None:
    errors: list[str] = []
    attempts: list[int] = []
    database = Database(url, engine_options={"isolation_level": "SERIALIZABLE"})
    try:
        uow = AppUnitOfWork(database)
        barrier.wait()
        for _ in range(INCREMENTS):
            uow.run(_increment, uow, attempts, retries=1000)
    except Exception as error:  # reported, so the parent never waits for a result forever
        errors.append(f"worker {worker}: {type(error).__name__}: {error}")
    finally:
        database.dispose()
    errors.append(f"attempts {len(attempts)}")
    results.put(errors)


@pytest.mark.slow
@postgresql
def test_processes_incrementing_one_counter_at_serializable_lose_no_increment(
    serializable: Database, db: Database
) -> None:
    serializable.dispose()
    db.dispose()  # no child inherits a pooled connection
    reports = race_in_processes(_race_worker, (db.url,), WORKERS)

    attempts = [int(report.split()[1]) for report in reports if report.startswith("attempts ")]
    assert [report for report in reports if not report.startswith("attempts ")] == []
    assert _ages(db)[COUNTER] == WORKERS * INCREMENTS
    assert len(attempts) == WORKERS
    assert sum(attempts) > WORKERS * INCREMENTS  # some blocks did run again


# -- the async face --------------------------------------------------------------------------


class _AsyncUnitOfWork(AsyncUnitOfWork):
    pass


async def _increment_async(uow: _AsyncUnitOfWork, attempts: list[int]) -> int:
    attempts.append(1)
    session = uow.session
    age = (await session.execute(select(User.age).where(User.email == COUNTER))).scalar_one()
    await session.execute(update(User).where(User.email == COUNTER).values(age=age + 1))
    return int(age) + 1


@pytest.mark.slow
@postgresql
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg-async"])
async def test_tasks_incrementing_one_counter_at_serializable_lose_no_increment(
    serializable: Database, db: Database, driver: str
) -> None:
    url = async_url(db.url.render_as_string(hide_password=False), driver)
    adb = AsyncDatabase(
        url, engine_options={"isolation_level": "SERIALIZABLE", "pool_size": WORKERS}
    )
    uow = _AsyncUnitOfWork(adb)
    attempts: list[int] = []
    start = asyncio.Event()

    async def task() -> None:
        await start.wait()
        for _ in range(INCREMENTS):
            await uow.run(_increment_async, uow, attempts, retries=1000)

    try:
        tasks = [asyncio.create_task(task()) for _ in range(WORKERS)]
        start.set()
        await asyncio.gather(*tasks)
    finally:
        await adb.dispose()

    assert _ages(db)[COUNTER] == WORKERS * INCREMENTS
    assert len(attempts) > WORKERS * INCREMENTS  # some blocks did run again


@postgresql
@pytest.mark.parametrize("driver", ["asyncpg", "psycopg-async"])
async def test_async_run_retries_and_awaits_only_the_committed_attempts_callbacks(
    serializable: Database, db: Database, driver: str
) -> None:
    url = async_url(db.url.render_as_string(hide_password=False), driver)
    adb = AsyncDatabase(url, engine_options={"isolation_level": "SERIALIZABLE"})
    uow = _AsyncUnitOfWork(adb)
    attempts: list[int] = []
    ran: list[int] = []
    errors: list[BaseException] = []

    async def callback(attempt: int) -> None:
        ran.append(attempt)

    async def work() -> int:
        attempt = len(attempts) + 1
        uow.on_commit(lambda: callback(attempt))
        await uow.session.execute(select(User.age).where(User.email == COUNTER))
        if attempt == 1:
            _bump_elsewhere(serializable, COUNTER)
        try:
            return await _increment_async(uow, attempts)
        except DBAPIError as error:  # asyncpg's is not an OperationalError
            errors.append(error)
            raise

    try:
        assert await uow.run(work) == 2
        with pytest.raises(UnitOfWorkError, match="inside an open block"):
            async with uow:
                await uow.run(work)
        assert await uow.run(lambda n: n + 1, 41) == 42  # a plain function is not awaited
    finally:
        await adb.dispose()

    assert len(attempts) == 2
    assert ran == [2]
    assert len(errors) == 1
    assert is_retryable(errors[0])
    assert _ages(db)[COUNTER] == 2


@postgresql
def test_is_retryable_recognises_a_deadlock_raised_by_the_server(db: Database) -> None:
    with db.engine.connect() as connection:
        with pytest.raises(OperationalError) as raised:
            connection.execute(
                text("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'deadlock_detected'; END $$")
            )
    assert is_retryable(raised.value)
