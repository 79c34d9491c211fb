"""`transaction_pooling=True`: the library behind a real PgBouncer in transaction pooling mode.

The repository suite's core modules and the get-or-create races also run through it (modules
marked `through_pgbouncer`, see tests/conftest.py). This module proves that the PgBouncer of the
test run really pools by transaction, that without the option the drivers' prepared statements
break there (so the suite's passing through it means something), and what the option sets up.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, make_url, select, text
from sqlalchemy.exc import DBAPIError

from repositories import AsyncRepository
from tests.conftest import postgres_url, reset_postgres
from tests.models import AppUnitOfWork, Base, User
from tests.pgbouncer_server import POOL_SIZE, open_every_server_connection
from uow import AsyncDatabase, AsyncUnitOfWork, Database
from uow.settings import DatabaseSettings, SettingsError

pytestmark = pytest.mark.pgbouncer


class AsyncAppUnitOfWork(AsyncUnitOfWork):
    users: AsyncRepository[User]


ASYNC_DRIVERS = {
    "asyncpg": "postgresql+asyncpg",
    "psycopg-async": "postgresql+psycopg",
    "psycopg_async": "postgresql+psycopg_async",
}


@pytest.fixture
def pooled(pgbouncer_url: str) -> Iterator[str]:
    """The PgBouncer URL (psycopg), with the test tables created empty behind it."""
    database = Database(postgres_url())
    reset_postgres(database)
    database.create_all(Base.metadata)
    with database.Session() as session, session.begin():
        session.add(User(email="ada@example.com", name="Ada"))
    open_every_server_connection(pgbouncer_url)  # so that consecutive statements rotate
    try:
        yield pgbouncer_url
    finally:
        reset_postgres(database)
        database.dispose()


def _server_pid(database: Database) -> int:
    with database.engine.connect() as connection:
        return int(connection.scalar(text("SELECT pg_backend_pid()")) or 0)


def test_the_pooler_lends_a_server_connection_per_transaction_not_per_client(
    pooled: str,
) -> None:
    # One client connection (pool_size=1), statements one after the other: each goes to the
    # server connection idle the longest, so they visit every one of them in turn.
    database = Database(pooled, {"pool_size": 1, "max_overflow": 0}, transaction_pooling=True)
    try:
        servers = [_server_pid(database) for _ in range(2 * POOL_SIZE)]
        assert len(set(servers)) == POOL_SIZE
        assert all(a != b for a, b in itertools.pairwise(servers))
    finally:
        database.dispose()


def _read_the_same_query(uow: AppUnitOfWork, times: int) -> None:
    for _ in range(times):
        with uow:
            assert uow.users.one(email="ada@example.com").name == "Ada"


@pytest.mark.parametrize("transaction_pooling", [False, True], ids=["plain", "pooling"])
def test_psycopg_prepared_statements_break_behind_the_pooler_unless_told(
    pooled: str, transaction_pooling: bool
) -> None:
    database = Database(pooled, transaction_pooling=transaction_pooling)
    uow = AppUnitOfWork(database)
    try:
        # psycopg prepares a query from its fifth run (prepare_threshold=5), on the server
        # connection that run went to; the next run goes to another one.
        if transaction_pooling:
            _read_the_same_query(uow, 10)
        else:
            with pytest.raises(DBAPIError, match=r"prepared statement \S+ does not exist"):
                _read_the_same_query(uow, 10)
    finally:
        database.dispose()


@pytest.mark.parametrize("transaction_pooling", [False, True], ids=["plain", "pooling"])
def test_asyncpg_prepared_statements_break_behind_the_pooler_unless_told(
    pooled: str, transaction_pooling: bool
) -> None:
    url = make_url(pooled).set(drivername="postgresql+asyncpg")
    adb = AsyncDatabase(url, transaction_pooling=transaction_pooling)
    uow = AsyncAppUnitOfWork(adb)

    async def read(times: int) -> None:
        for _ in range(times):
            async with uow:
                assert (await uow.users.one(email="ada@example.com")).name == "Ada"

    async def scenario() -> None:
        try:
            if transaction_pooling:
                await read(10)
            else:
                # SQLAlchemy's adapter prepares a statement in one exchange and runs it in the
                # next, which goes to another server connection.
                with pytest.raises(DBAPIError, match=r"prepared statement \S+ does not exist"):
                    await read(10)
        finally:
            await adb.dispose()

    asyncio.run(scenario())


def _prepared_statements(names: Any) -> set[str]:
    return set(str(names).split(",")) if names else set()


def test_asyncpg_leaves_no_prepared_statement_on_the_servers(pooled: str) -> None:
    names = text("SELECT string_agg(name, ',') FROM pg_prepared_statements")
    # What earlier tests left on the server connections (each visited in turn, twice).
    database = Database(pooled, transaction_pooling=True)
    before: set[str] = set()
    for _ in range(2 * POOL_SIZE):
        with database.engine.connect() as connection:  # a transaction each (text() begins it)
            before |= _prepared_statements(connection.scalar(names))
    database.dispose()
    url = make_url(pooled).set(drivername="postgresql+asyncpg")
    adb = AsyncDatabase(url, transaction_pooling=True)
    uow = AsyncAppUnitOfWork(adb)

    async def scenario() -> set[str]:
        try:
            left = set()
            for _ in range(4 * POOL_SIZE):
                async with uow:
                    await uow.users.one(email="ada@example.com")
                    left |= _prepared_statements(await uow.session.scalar(names))
            return left
        finally:
            await adb.dispose()

    # Named statements would pile up on the server connections (asyncpg closes one at its next
    # statement, which goes to another server connection): the unnamed one is replaced instead.
    assert asyncio.run(scenario()) - before == set()


@pytest.mark.parametrize(
    ("driver", "lazy"),
    [("asyncpg", False), ("psycopg-async", True), ("psycopg_async", True)],
)
def test_async_drivers_behind_the_pooler(pooled: str, driver: str, lazy: bool) -> None:
    url = make_url(pooled).set(drivername=ASYNC_DRIVERS[driver])
    adb = AsyncDatabase(url, transaction_pooling=True)
    uow = AsyncAppUnitOfWork(adb)
    now = select(func.now())  # the time its transaction began

    async def scenario() -> list[Any]:
        try:
            async with uow:
                # Two plain reads: outside a transaction (lazy BEGIN) each is a transaction of
                # its own, with its own now(); in a transaction begun before them, one now().
                in_one_transaction = await uow.session.scalar(now) == await uow.session.scalar(now)
            for _ in range(2 * POOL_SIZE):  # on every server connection, more than once
                async with uow:
                    user = await uow.users.first_or_create(
                        email="grace@example.com", defaults={"name": "Grace"}
                    )
                    count = await uow.users.count()
            return [in_one_transaction, user.name, count]
        finally:
            await adb.dispose()

    assert adb.lazy_begin is lazy
    # asyncpg begins eagerly: even a read-only block's first statement is in a transaction.
    assert asyncio.run(scenario()) == [not lazy, "Grace", 2]


def test_replicas_get_the_same_set_up(pooled: str) -> None:
    database = Database(pooled, replicas=[pooled], transaction_pooling=True)
    try:
        (replica,) = database.replica_engines
        with replica.connect() as connection:
            assert connection.connection.dbapi_connection.prepare_threshold is None
    finally:
        database.dispose()


def test_the_setting_reaches_the_database(pooled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", pooled)
    monkeypatch.setenv("DATABASE_TRANSACTION_POOLING", "true")
    settings = DatabaseSettings()
    database = settings.create_database()
    adb = settings.create_async_database()
    try:
        assert database.transaction_pooling
        assert adb.transaction_pooling
        _read_the_same_query(AppUnitOfWork(database), 10)
    finally:
        database.dispose()
        asyncio.run(adb.dispose())


def test_the_setting_with_a_sqlite_url_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///app.db")
    monkeypatch.setenv("DATABASE_TRANSACTION_POOLING", "true")
    with pytest.raises(SettingsError, match=r"DATABASE_TRANSACTION_POOLING: .*PostgreSQL"):
        DatabaseSettings()


def test_sqlite_refuses_the_option() -> None:
    with pytest.raises(ValueError, match="transaction_pooling is for PostgreSQL"):
        Database("sqlite://", transaction_pooling=True)
    with pytest.raises(ValueError, match="transaction_pooling is for PostgreSQL"):
        AsyncDatabase("sqlite+aiosqlite://", transaction_pooling=True)


def test_the_option_takes_a_bool() -> None:
    with pytest.raises(TypeError, match="transaction_pooling takes True or False, not str"):
        Database("postgresql+psycopg://app@pgbouncer/app", transaction_pooling="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="transaction_pooling takes True or False, not int"):
        AsyncDatabase("postgresql+asyncpg://app@pgbouncer/app", transaction_pooling=1)  # type: ignore[arg-type]
