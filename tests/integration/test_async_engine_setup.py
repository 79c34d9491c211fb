"""The engine set-up of an AsyncDatabase, on each async driver: what Database's tests prove, here.

`uow.database.configure_engine` installs the same hooks on an AsyncEngine's `sync_engine` as on
a Database's engine; with an async driver the DBAPI connection they see is SQLAlchemy's adapter
(the asyncpg, async psycopg or aiosqlite connection is its `driver_connection`). These tests run
on asyncpg, async psycopg and (where it applies) aiosqlite: dead pooled connections replaced at
checkout (tests/integration/test_connection_failures.py), an aborted transaction's COMMIT
refused, rolled-back savepoints released (test_block_boundaries.py), and
`bulk_create(return_objects=False)` (COPY on async psycopg, the INSERT elsewhere; test_copy.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool

from repositories import AsyncRepository
from tests.conftest import postgres_url
from tests.integration.helpers import Boom
from tests.models import Base, Post, User
from tests.server_log import AsyncWire, async_postgres_url, reset_async_postgres
from uow import AsyncDatabase, AsyncUnitOfWork, _liveness
from uow.errors import UnitOfWorkError

POOL_SIZE = 3
WAIT = 30  # seconds: only how long a broken test may hang, never a delay a passing test takes
PG_DRIVERS = ["psycopg", "asyncpg"]


class AppAsyncUnitOfWork(AsyncUnitOfWork):
    users: AsyncRepository[User]
    posts: AsyncRepository[Post]


async def add_user(uow: AppAsyncUnitOfWork, email: str) -> User:
    return await uow.users.create(email=email, name=email.split("@")[0])


async def committed_emails(adb: AsyncDatabase) -> set[str]:
    async with adb.Session() as other:
        return set((await other.scalars(select(User.email))).all())


def savepoint_kinds(statements: list[str]) -> list[str]:
    kinds = []
    for statement in statements:
        words = statement.upper().split()
        if "SAVEPOINT" in words:
            kinds.append("ROLLBACK TO" if words[0] == "ROLLBACK" else words[0])
    return kinds


# -- dead connections are replaced at checkout (PostgreSQL) --------------------------------------


@pytest.fixture(params=PG_DRIVERS)
async def pg_databases(request: pytest.FixtureRequest) -> AsyncIterator[list[AsyncDatabase]]:
    """Fresh test tables, and the AsyncDatabases (on the parametrized driver) a test makes with
    `pg_database`; disposed afterwards."""
    tables = AsyncDatabase(async_postgres_url(str(request.param)))
    await reset_async_postgres(tables)
    await tables.create_all(Base.metadata)
    made: list[AsyncDatabase] = [tables]
    yield made
    for database in made[1:]:
        await database.s.remove()
        await database.dispose()
    await reset_async_postgres(tables)
    await tables.dispose()


def pg_database(databases: list[AsyncDatabase], **engine_options: Any) -> AsyncDatabase:
    """An AsyncDatabase on the fixture's driver with a pool of POOL_SIZE."""
    options = {"pool_size": POOL_SIZE, **engine_options}
    database = AsyncDatabase(databases[0].url, engine_options=options)
    databases.append(database)
    return database


async def warm_pool(adb: AsyncDatabase) -> set[int]:
    """Check out POOL_SIZE connections at once, then check them all in: the backends' pids."""
    connections = [await adb.engine.connect() for _ in range(POOL_SIZE)]
    pids = {(await c.execute(text("SELECT pg_backend_pid()"))).scalar_one() for c in connections}
    for connection in connections:
        await connection.close()
    pool = adb.engine.sync_engine.pool
    assert isinstance(pool, AsyncAdaptedQueuePool)
    assert pool.checkedin() == POOL_SIZE
    return pids


KILL = "SELECT pg_terminate_backend(:pid, :timeout)"


def kill_backends_blocking(pids: set[int]) -> None:
    """Terminate the backends from a sync connection, blocking the event loop meanwhile: the
    pooled connections' drivers cannot have read the server's goodbye before the next
    checkout (the socket still has it)."""
    admin = create_engine(postgres_url(), poolclass=NullPool)
    try:
        with admin.connect() as connection:
            for pid in pids:
                terminated = connection.execute(
                    text(KILL), {"pid": pid, "timeout": WAIT * 1000}
                ).scalar_one()
                assert terminated, f"backend {pid} was not terminated"
    finally:
        admin.dispose()


async def kill_backends_awaited(pids: set[int]) -> None:
    """Terminate the backends from an async connection: the event loop runs while the server
    answers, so asyncpg may read the goodbye first (and know its connection closed)."""
    admin = create_async_engine(async_postgres_url("asyncpg"), poolclass=NullPool)
    try:
        async with admin.connect() as connection:
            for pid in pids:
                result = await connection.execute(text(KILL), {"pid": pid, "timeout": WAIT * 1000})
                assert result.scalar_one(), f"backend {pid} was not terminated"
    finally:
        await admin.dispose()


async def kill_backends(pids: set[int], how: str) -> None:
    if how == "blocking":
        kill_backends_blocking(pids)
    else:
        await kill_backends_awaited(pids)


async def current_pid(uow: AppAsyncUnitOfWork) -> int:
    return int((await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@pytest.mark.parametrize("kill", ["blocking", "awaited"])
async def test_units_of_work_succeed_after_every_pooled_backend_was_killed(
    pg_databases: list[AsyncDatabase], kill: str
) -> None:
    adb = pg_database(pg_databases)  # pool_pre_ping left to the library: the socket check
    assert _liveness.installed(adb.engine.sync_engine)
    killed = await warm_pool(adb)
    await kill_backends(killed, kill)

    uow = AppAsyncUnitOfWork(adb)
    together = asyncio.Barrier(POOL_SIZE)  # all the pool's connections in use at once

    async def work(number: int) -> int:
        async with uow:
            await add_user(uow, f"user{number}@example.com")
            pid = await current_pid(uow)
            await asyncio.wait_for(together.wait(), WAIT)
            return pid

    # Each task, started from outside a block, has its own session and connection.
    pids = await asyncio.gather(*(work(n) for n in range(POOL_SIZE)))
    assert not killed & set(pids)  # every block ran on a new backend
    async with uow:
        await add_user(uow, "after@example.com")
    expected = {f"user{n}@example.com" for n in range(POOL_SIZE)} | {"after@example.com"}
    assert await committed_emails(adb) == expected


async def test_without_the_check_the_first_block_after_the_kill_fails_and_the_next_succeeds(
    pg_databases: list[AsyncDatabase],
) -> None:
    adb = pg_database(pg_databases, pool_pre_ping=False)
    assert not _liveness.installed(adb.engine.sync_engine)
    kill_backends_blocking(await warm_pool(adb))

    uow = AppAsyncUnitOfWork(adb)
    ran: list[str] = []
    with pytest.raises(DBAPIError) as caught:
        async with uow:
            uow.on_commit(lambda: ran.append("on_commit"))
            await add_user(uow, "lost@example.com")
    # SQLAlchemy recognised a disconnect through the adapter: it discarded that connection and
    # marked the pool's others stale, so the next checkout connects afresh.
    assert caught.value.connection_invalidated
    assert ran == []
    async with uow:
        await add_user(uow, "next@example.com")
    assert await committed_emails(adb) == {"next@example.com"}


async def test_a_backend_killed_inside_a_block_fails_that_block_and_the_next_block_reconnects(
    pg_databases: list[AsyncDatabase],
) -> None:
    adb = pg_database(pg_databases)
    uow = AppAsyncUnitOfWork(adb)
    with pytest.raises(DBAPIError) as caught:
        async with uow:
            await add_user(uow, "lost@example.com")
            kill_backends_blocking({await current_pid(uow)})
            await add_user(uow, "also-lost@example.com")  # the check only guards the checkout
    assert caught.value.connection_invalidated
    async with uow:
        await add_user(uow, "next@example.com")
    assert await committed_emails(adb) == {"next@example.com"}


async def test_a_killed_backend_of_a_read_only_block_is_replaced_too(
    pg_databases: list[AsyncDatabase],
) -> None:
    # A read-only block sends one SELECT: no BEGIN that would find the dead connection first.
    adb = pg_database(pg_databases, pool_size=1)
    uow = AppAsyncUnitOfWork(adb)
    async with uow:
        killed = await current_pid(uow)
    kill_backends_blocking({killed})
    async with uow:
        assert await uow.users.count() == 0
        assert await current_pid(uow) != killed


# -- transactions: aborted COMMIT refused, savepoints released ------------------------------------


async def test_an_error_caught_inside_a_block_makes_its_commit_refused(
    async_wired: AsyncWire,
) -> None:
    adb = async_wired.adb
    uow = AppAsyncUnitOfWork(adb)
    async with uow:
        await add_user(uow, "bob@example.com")

    async def block() -> None:
        # Query.update runs a statement, not a flush: SQLAlchemy's transaction stays active,
        # but PostgreSQL's is aborted, and a COMMIT there is answered with a silent ROLLBACK.
        async with uow:
            await add_user(uow, "carl@example.com")
            with pytest.raises(IntegrityError):
                await uow.users.filter(email="bob@example.com").update(email="ada@example.com")

    if async_wired.is_sqlite:
        await block()  # SQLite undoes only the failed statement: the rest of the block commits
        assert await committed_emails(adb) == {
            "ada@example.com",
            "bob@example.com",
            "carl@example.com",
        }
        return
    with async_wired.statements() as sent, pytest.raises(UnitOfWorkError) as caught:
        await block()
    assert "nothing was committed" in str(caught.value)
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert [s.rstrip(";").split()[0] for s in sent] == ["BEGIN", "INSERT", "UPDATE", "ROLLBACK"]
    assert await committed_emails(adb) == {"ada@example.com", "bob@example.com"}
    async with uow:  # the connection is usable: the next block commits
        await add_user(uow, "dan@example.com")
    assert "dan@example.com" in await committed_emails(adb)


async def test_an_error_the_server_never_saw_does_not_refuse_the_commit(
    async_wired: AsyncWire,
) -> None:
    if async_wired.is_sqlite:
        pytest.skip("SQLite aborts no transaction on an error")
    uow = AppAsyncUnitOfWork(async_wired.adb)
    statement, value = "SELECT :value", object()
    error: type[DBAPIError] = ProgrammingError
    if async_wired.driver == "asyncpg":  # asyncpg encodes parameters itself: an int is required
        statement, value, error = "SELECT CAST(:value AS integer)", "not a number", DBAPIError
    async with uow:
        await add_user(uow, "kept@example.com")
        with pytest.raises(error):
            await uow.session.execute(text(statement), {"value": value})
    assert await committed_emails(async_wired.adb) == {"ada@example.com", "kept@example.com"}


async def test_a_rolled_back_nested_block_releases_its_savepoint(async_wired: AsyncWire) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    async with uow:
        await add_user(uow, "outer@example.com")
        with async_wired.statements() as sent:
            for _ in range(3):
                with pytest.raises(Boom):
                    async with uow:
                        await add_user(uow, "inner@example.com")
                        raise Boom
    # Each savepoint is rolled back and then released, so the next one does not nest inside it.
    assert savepoint_kinds(sent) == ["SAVEPOINT", "ROLLBACK TO", "RELEASE"] * 3
    assert await committed_emails(async_wired.adb) == {"ada@example.com", "outer@example.com"}


async def test_a_savepoint_rolled_back_after_an_error_leaves_the_block_committable(
    async_wired: AsyncWire,
) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    async with uow:
        await add_user(uow, "before@example.com")
        with pytest.raises(IntegrityError):
            async with uow:  # the error aborts only the savepoint
                await uow.users.filter(email="before@example.com").update(email="ada@example.com")
        await add_user(uow, "after@example.com")
    expected = {"ada@example.com", "before@example.com", "after@example.com"}
    assert await committed_emails(async_wired.adb) == expected


async def test_a_connection_with_its_own_isolation_level_commits_on_a_lazy_engine(
    async_wired: AsyncWire,
) -> None:
    # The driver begins that transaction itself (asyncpg's adapter, psycopg, sqlite3): no BEGIN
    # of ours, and the driver's own COMMIT ends it.
    if async_wired.is_sqlite:
        pytest.skip("PostgreSQL's isolation levels")
    async with async_wired.adb.engine.connect() as connection:
        serializable = await connection.execution_options(isolation_level="SERIALIZABLE")
        await serializable.execute(insert(User).values(email="s@example.com", name="S"))
        level = (await serializable.execute(text("SHOW transaction_isolation"))).scalar_one()
        assert level == "serializable"
        await serializable.commit()
    assert "s@example.com" in await committed_emails(async_wired.adb)


# -- bulk_create(return_objects=False) -----------------------------------------------------------


def rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"email": f"u{n:05d}@example.com", "name": f"User {n}", "age": n % 90}
        for n in range(start, start + count)
    ]


async def test_bulk_create_without_objects_is_begun_and_committed_on_every_driver(
    async_wired: AsyncWire,
) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            assert await uow.users.bulk_create(rows(300), return_objects=False) == []
    first_words = [s.split()[0] for s in sent]
    if async_wired.driver == "psycopg":  # COPY through psycopg's async cursor
        assert sent == ["BEGIN", "COPY users (email, name, age) FROM STDIN", "COMMIT"]
    else:  # asyncpg and aiosqlite: SQLAlchemy Core's executemany
        assert (first_words[0], first_words[-1]) == ("BEGIN", "COMMIT")
        assert set(first_words[1:-1]) == {"INSERT"}
    emails = await committed_emails(async_wired.adb)
    assert len(emails) == 301
    assert "u00299@example.com" in emails


@pytest.mark.parametrize("earlier_write", [False, True], ids=["first write", "after a write"])
async def test_a_failed_bulk_create_without_objects_leaves_the_block_usable(
    async_wired: AsyncWire, earlier_write: bool
) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    batch = rows(250)
    batch[200] = {"email": "ada@example.com", "name": "Twin", "age": 1}  # taken
    async with uow:
        if earlier_write:
            await add_user(uow, "before@example.com")
        with pytest.raises(IntegrityError):
            await uow.users.bulk_create(batch, batch_size=100, return_objects=False)
        assert await uow.users.count() == (2 if earlier_write else 1)  # none of its rows
        await add_user(uow, "after@example.com")
    expected = {"ada@example.com", "after@example.com"}
    if earlier_write:
        expected.add("before@example.com")
    assert await committed_emails(async_wired.adb) == expected


async def test_bulk_create_without_objects_fills_python_defaults_on_every_driver(
    async_wired: AsyncWire,
) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    async with uow:
        ada = await uow.users.first(email="ada@example.com")
        assert ada is not None
        posts = [{"title": f"Post {n}", "author_id": ada.id} for n in range(5)]
        await uow.posts.bulk_create(posts, return_objects=False)
    async with async_wired.adb.Session() as session:
        titles = (await session.scalars(select(Post.title).order_by(Post.id))).all()
    assert titles == [f"Post {n}" for n in range(5)]
