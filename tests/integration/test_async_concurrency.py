"""Many units of work at once on the async face: tasks, cancellation and fork (issue 12).

On aiosqlite, asyncpg and async psycopg. One AsyncUnitOfWork object serves every task, as a
container Singleton would: the transaction belongs to the pair (context, AsyncDatabase), so tasks
started from outside a block each get their own session, connection and transaction. A task
cancelled inside a block rolls back and gives its connection back to the pool; a forked child
works on its parent's AsyncDatabase object without touching the parent's connections.

Tasks are synchronised with futures, events and barriers, and with what the server shows as
running; nothing sleeps to wait for something to happen.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from repositories import AsyncRepository
from tests.conftest import fresh_database
from tests.integration.helpers import Boom, committed_emails
from tests.models import User
from uow import AsyncDatabase, AsyncUnitOfWork, Database

DRIVERS = {
    "aiosqlite": "sqlite+aiosqlite",
    "asyncpg": "postgresql+asyncpg",
    "psycopg": "postgresql+psycopg",  # create_async_engine takes psycopg's async connection
}


class UsersUnitOfWork(AsyncUnitOfWork):
    users: AsyncRepository[User]


@pytest.fixture(params=list(DRIVERS))
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sync_db(driver: str, tmp_path: Path) -> Iterator[Database]:
    """The test database, tables created empty; read back what was committed through it."""
    backend = "sqlite" if driver == "aiosqlite" else "postgresql"
    with fresh_database(backend, tmp_path) as database:
        yield database


@pytest.fixture
async def adb(sync_db: Database, driver: str) -> AsyncIterator[AsyncDatabase]:
    """An AsyncDatabase over the same database, through `driver`."""
    database = AsyncDatabase(sync_db.url.set(drivername=DRIVERS[driver]))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def uow(adb: AsyncDatabase) -> UsersUnitOfWork:
    """One unit-of-work object for the whole test, shared by all its tasks."""
    return UsersUnitOfWork(adb)


def checked_out(adb: AsyncDatabase) -> int:
    return int(adb.engine.sync_engine.pool.checkedout())


def is_postgres(adb: AsyncDatabase) -> bool:
    return adb.url.get_backend_name() == "postgresql"


# -- many tasks, one unit of work ----------------------------------------------------------------

TASKS = 50
OUTCOMES = (
    "commit",
    "savepoint rolled back",
    "raise before the savepoint",
    "raise after the savepoint",
    "set_rollback",
)
# What each outcome leaves committed, and the callbacks it runs, in order.
COMMITTED = {"commit": ("outer", "inner"), "savepoint rolled back": ("outer",)}
CALLBACKS = {
    "commit": ("plain", "coroutine", "inner"),
    "savepoint rolled back": ("plain", "coroutine"),
}


def email_of(task: int, part: str) -> str:
    return f"t{task}-{part}@example.com"


async def test_fifty_tasks_on_one_unit_of_work_each_get_exactly_their_own_outcome(
    adb: AsyncDatabase, uow: UsersUnitOfWork, sync_db: Database
) -> None:
    ran: list[tuple[int, str]] = []
    sessions: dict[int, Any] = {}
    inside = most_inside = 0

    def plain(task: int, what: str) -> Callable[[], None]:
        return lambda: ran.append((task, what))

    def coroutine(task: int) -> Callable[[], Awaitable[None]]:
        async def note() -> None:
            await asyncio.sleep(0)  # a real suspension: the callback is awaited on the loop
            ran.append((task, "coroutine"))

        return note

    async def own_rows(task: int) -> set[str]:
        return {u.email for u in await uow.users.filter(email__startswith=f"t{task}-").all()}

    async def unit(task: int) -> None:
        nonlocal inside, most_inside
        outcome = OUTCOMES[task % len(OUTCOMES)]
        async with uow:
            inside += 1
            most_inside = max(most_inside, inside)
            try:
                sessions[task] = uow.session
                assert adb.s() is uow.session
                await uow.users.create(email=email_of(task, "outer"), name=f"t{task}")
                uow.on_commit(plain(task, "plain"))
                uow.on_commit(coroutine(task))
                if outcome == "raise before the savepoint":
                    raise Boom
                try:
                    async with uow:
                        assert uow.session is sessions[task]
                        await uow.users.create(email=email_of(task, "inner"), name=f"t{task}")
                        uow.on_commit(plain(task, "inner"))
                        if outcome == "savepoint rolled back":
                            raise Boom
                except Boom:
                    assert await own_rows(task) == {email_of(task, "outer")}
                else:
                    assert await own_rows(task) == {email_of(task, p) for p in ("outer", "inner")}
                if outcome == "raise after the savepoint":
                    raise Boom
                if outcome == "set_rollback":
                    uow.set_rollback(True)
            finally:
                inside -= 1

    results = await asyncio.gather(*(unit(task) for task in range(TASKS)), return_exceptions=True)

    outcomes = [OUTCOMES[task % len(OUTCOMES)] for task in range(TASKS)]
    raised = [type(result).__name__ if result is not None else None for result in results]
    assert raised == ["Boom" if o.startswith("raise") else None for o in outcomes]
    assert committed_emails(sync_db) == {
        email_of(task, part) for task, o in enumerate(outcomes) for part in COMMITTED.get(o, ())
    }
    # Once each, only for committed tasks, in registration order within a task.
    assert Counter(ran) == Counter(
        (task, what) for task, o in enumerate(outcomes) for what in CALLBACKS.get(o, ())
    )
    for task, outcome in enumerate(outcomes):
        assert [what for t, what in ran if t == task] == list(CALLBACKS.get(outcome, ()))
    assert len({id(session) for session in sessions.values()}) == TASKS
    assert most_inside > 1  # the blocks really ran at the same time
    assert checked_out(adb) == 0
    assert not adb.in_unit_of_work


async def test_tasks_started_outside_a_block_each_get_their_own_session_and_transaction(
    adb: AsyncDatabase, uow: UsersUnitOfWork, sync_db: Database
) -> None:
    together = 10  # fewer than the pool's 5 + 10 overflow: all hold a connection at once
    barrier = asyncio.Barrier(together)
    postgres = is_postgres(adb)

    async def unit(task: int) -> tuple[Any, Any, tuple[Any, ...]]:
        email = f"u{task}@example.com"
        async with uow:
            if postgres:
                await uow.users.create(email=email, name="u")
                row = await uow.session.execute(text("SELECT pg_backend_pid(), txid_current()"))
                server = tuple(row.one())
            else:
                # SQLite has one writer at a time: these blocks read before the barrier (lazy
                # BEGIN: no lock held) and write after it.
                await uow.users.count()
                server = ()
            connection = await (await uow.session.connection()).get_raw_connection()
            await barrier.wait()  # every task is inside its block now
            if not postgres:
                await uow.users.create(email=email, name="u")
            return uow.session, connection.driver_connection, server

    results = await asyncio.gather(*(unit(task) for task in range(together)))

    sessions, connections, server = zip(*results, strict=True)
    assert len({id(session) for session in sessions}) == together
    assert len({id(connection) for connection in connections}) == together
    if postgres:
        pids, txids = zip(*server, strict=True)
        assert len(set(pids)) == together
        assert len(set(txids)) == together
    assert committed_emails(sync_db) == {f"u{task}@example.com" for task in range(together)}
    assert checked_out(adb) == 0


# -- cancellation --------------------------------------------------------------------------------

WAIT_FOR_TIMEOUT = 0.5  # seconds; what the timeout interrupts is the same whenever it fires


class Stall:
    """What a task awaits inside its block when it is cancelled: `run(uow)` never returns by
    itself; `started()` returns once the task is there."""

    async def run(self, uow: UsersUnitOfWork) -> None:
        raise NotImplementedError

    async def started(self) -> None:
        raise NotImplementedError


class IdleStall(Stall):
    """Idle between two statements: the connection sits in its transaction, nothing running."""

    def __init__(self) -> None:
        self._there = asyncio.get_running_loop().create_future()

    async def run(self, uow: UsersUnitOfWork) -> None:
        self._there.set_result(None)
        await asyncio.Event().wait()  # nobody sets it

    async def started(self) -> None:
        await self._there


class ServerQueryStall(Stall):
    """PostgreSQL: `pg_sleep`, seen running in pg_stat_activity."""

    def __init__(self, sync_db: Database) -> None:
        self._db = sync_db
        self._pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def run(self, uow: UsersUnitOfWork) -> None:
        pid = await uow.session.execute(text("SELECT pg_backend_pid()"))
        self._pid.set_result(pid.scalar_one())
        await uow.session.execute(text("SELECT pg_sleep(60)"))

    async def started(self) -> None:
        await asyncio.to_thread(self._wait_until_running, await self._pid)

    def _wait_until_running(self, pid: int) -> None:
        query = text("SELECT state, query FROM pg_stat_activity WHERE pid = :pid")
        deadline = time.monotonic() + 30
        with self._db.engine.connect() as connection:  # autocommit: a fresh view each time
            while time.monotonic() < deadline:
                state, sql = connection.execute(query, {"pid": pid}).one()
                if state == "active" and "pg_sleep" in sql:
                    return
        raise AssertionError(f"backend {pid} never ran pg_sleep")


class SqliteQueryStall(Stall):
    """SQLite: a SQL function that holds its query in aiosqlite's thread.

    aiosqlite cannot interrupt a query in its thread: the cancelled task waits for it to end.
    It ends when the cancellation arrives, which SQLAlchemy answers by invalidating the
    connection (the pool's `invalidate` event).
    """

    def __init__(self, adb: AsyncDatabase) -> None:
        loop = asyncio.get_running_loop()
        self._running = loop.create_future()
        self._released = threading.Event()
        engine = adb.engine.sync_engine

        def running() -> None:
            if not self._running.done():
                self._running.set_result(None)

        def hold() -> int:
            loop.call_soon_threadsafe(running)
            self._released.wait(60)
            return 1

        def register(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.create_function("uow_test_hold", 0, hold)

        event.listen(engine, "connect", register)
        event.listen(engine, "invalidate", lambda *_: self._released.set())

    async def run(self, uow: UsersUnitOfWork) -> None:
        await uow.session.execute(text("SELECT uow_test_hold()"))

    async def started(self) -> None:
        await self._running

    def release(self) -> None:
        self._released.set()


async def write_then(uow: UsersUnitOfWork, email: str, stall: Stall) -> None:
    async with uow:
        await uow.users.create(email=email, name="cancelled")
        await stall.run(uow)


def sqlite_write_lock_is_free(path: str) -> bool:
    probe = sqlite3.connect(path, timeout=1, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()
    return True


async def next_unit_of_work_writes(uow: UsersUnitOfWork, sync_db: Database, email: str) -> None:
    """The same row again, committed: nothing of the cancelled transaction is in the way."""
    if sync_db.url.get_backend_name() == "sqlite":
        # Fails in a second, where the next writer would wait out the 30 s busy timeout.
        assert sqlite_write_lock_is_free(str(sync_db.url.database))
    async with uow:
        if sync_db.url.get_backend_name() == "postgresql":
            # Fail, rather than hang, if the cancelled transaction still held the row's key.
            await uow.session.execute(text("SET LOCAL lock_timeout = '10s'"))
        await uow.users.create(email=email, name="next")
    assert email in committed_emails(sync_db)


@pytest.mark.parametrize("how", ["task.cancel()", "asyncio.wait_for timeout"])
@pytest.mark.parametrize("where", ["awaiting a query", "idle after a write"])
async def test_a_task_cancelled_inside_a_block_rolls_back_and_gives_its_connection_back(
    request: pytest.FixtureRequest,
    adb: AsyncDatabase,
    uow: UsersUnitOfWork,
    sync_db: Database,
    driver: str,
    where: str,
    how: str,
) -> None:
    stall: Stall
    if where == "idle after a write":
        stall = IdleStall()
    elif is_postgres(adb):
        stall = ServerQueryStall(sync_db)
    else:
        stall = SqliteQueryStall(adb)
        request.addfinalizer(stall.release)  # never leave aiosqlite's thread held
    email = "cancelled@example.com"

    # The exception stays referenced until the end, as an error reporter or a log would keep it.
    raised: pytest.ExceptionInfo[BaseException]
    if how == "task.cancel()":
        task = asyncio.create_task(write_then(uow, email, stall))
        await stall.started()
        task.cancel()
        with pytest.raises(asyncio.CancelledError) as raised:
            await task
    else:
        with pytest.raises(TimeoutError) as raised:
            await asyncio.wait_for(write_then(uow, email, stall), timeout=WAIT_FOR_TIMEOUT)

    assert checked_out(adb) == 0
    assert email not in committed_emails(sync_db)
    assert not adb.in_unit_of_work
    await next_unit_of_work_writes(uow, sync_db, email)
    assert checked_out(adb) == 0
    assert raised.value is not None


# -- fork ----------------------------------------------------------------------------------------


async def connection_of(uow: UsersUnitOfWork) -> tuple[Any, int | None]:
    """The driver's connection under the block, and its server process on PostgreSQL."""
    connection = await (await uow.session.connection()).get_raw_connection()
    pid = None
    if is_postgres(uow.database):
        pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    return connection.driver_connection, pid


async def child_units_of_work(adb: AsyncDatabase) -> dict[str, Any]:
    """In the child: what it inherited, and two units of work (one committed, one not)."""
    uow = UsersUnitOfWork(adb)
    report: dict[str, Any] = {
        "pooled": adb.engine.sync_engine.pool.checkedin(),
        "in a block": uow.in_block,
    }
    async with uow:
        await uow.users.create(email="child@example.com", name="child")
        report["seen"] = sorted(user.email for user in await uow.users.all())
        report["pid"] = (await connection_of(uow))[1]
    try:
        async with uow:
            await uow.users.create(email="child-rolled-back@example.com", name="child")
            raise Boom
    except Boom:
        pass
    report["checked out"] = checked_out(adb)
    await adb.dispose()
    return report


def child_main(adb: AsyncDatabase, results: Any) -> None:
    try:
        results.put(asyncio.run(child_units_of_work(adb)))
    except BaseException as error:  # report it, so the parent never waits for a result forever
        results.put({"crashed": repr(error)})


def run_child(adb: AsyncDatabase) -> dict[str, Any]:
    """Fork a child that runs units of work on `adb`; its report. Blocks the parent's loop."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=child_main, args=(adb, results))
    child.start()
    try:
        report: dict[str, Any] = results.get(timeout=60)
        child.join(timeout=30)
    finally:
        if child.is_alive():  # stuck: fail now rather than leave it running
            child.kill()
            child.join()
    report["exit code"] = child.exitcode
    return report


# Python 3.12 warns about forking a process with threads (aiosqlite runs one per connection);
# the child touches none of them.
@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
@pytest.mark.parametrize("fork", ["between blocks", "inside a block"])
async def test_a_forked_child_runs_units_of_work_on_the_parents_async_database(
    adb: AsyncDatabase, uow: UsersUnitOfWork, sync_db: Database, fork: str
) -> None:
    postgres = is_postgres(adb)
    if fork == "between blocks":
        async with uow:
            await uow.users.create(email="parent-before@example.com", name="parent")
            before = await connection_of(uow)
        report = run_child(adb)  # the parent's pool holds the connection just used
        async with uow:
            after = await connection_of(uow)
            await uow.users.create(email="parent-after@example.com", name="parent")
        parent_rows_seen = ["parent-before@example.com"]
    else:
        async with uow:
            if postgres:  # an open transaction on the connection the child inherits
                await uow.users.create(email="parent-before@example.com", name="parent")
            else:  # a read: SQLite's write lock stays free for the child
                await uow.users.count()
            before = await connection_of(uow)
            report = run_child(adb)
            after = await connection_of(uow)
            await uow.users.create(email="parent-after@example.com", name="parent")
        parent_rows_seen = []  # uncommitted while the child ran

    assert report == {
        "pooled": 0,  # the inherited pool was dropped
        "in a block": False,
        "seen": sorted(["child@example.com", *parent_rows_seen]),
        "pid": report["pid"],
        "checked out": 0,
        "exit code": 0,
    }
    # The parent's connection is the one it had, alive: the child neither used nor closed it.
    assert after[0] is before[0]
    assert after[1] == before[1]
    if postgres:
        assert report["pid"] != before[1]
    emails = {"child@example.com", "parent-after@example.com"}
    if postgres or fork == "between blocks":
        emails.add("parent-before@example.com")
    assert committed_emails(sync_db) == emails
    assert checked_out(adb) == 0


async def test_a_task_created_inside_a_block_opens_its_own_after_the_block_ended(
    adb: AsyncDatabase, uow: UsersUnitOfWork
) -> None:
    # A background task spawned from a request's block copies the block's context. Once the
    # block has ended, that copied state is stale: the task's own block gets its own session
    # and transaction, not a savepoint of the ended one.
    ended = asyncio.Event()

    async def background() -> None:
        await ended.wait()
        async with uow:
            await uow.users.create(email="task@example.com", name="Task")

    async with uow:
        await uow.users.create(email="request@example.com", name="Request")
        task = asyncio.create_task(background())
    ended.set()
    await task
    async with uow:
        assert {user.email for user in await uow.users.all()} == {
            "request@example.com",
            "task@example.com",
        }
    assert checked_out(adb) == 0
