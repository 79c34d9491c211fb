"""`transaction_pooling=True`: the library behind a real PgBouncer in transaction pooling mode.

The repository suite's core modules and the get-or-create races also run through it (modules
marked `through_pgbouncer`, see tests/conftest.py). This module proves that the PgBouncer of the
test run really pools by transaction, that without the option the drivers' prepared statements
break there (so the suite's passing through it means something), and what the option sets up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from repositories import AsyncRepository
from tests.conftest import postgres_url, reset_postgres
from tests.models import AppUnitOfWork, Base, User
from tests.pgbouncer_server import POOL_SIZE
from uow import AsyncDatabase, AsyncUnitOfWork, Database
from uow.settings import DatabaseSettings

pytestmark = pytest.mark.pgbouncer


class AsyncAppUnitOfWork(AsyncUnitOfWork):
    users: AsyncRepository[User]


ASYNC_DRIVERS = {"asyncpg": "postgresql+asyncpg", "psycopg-async": "postgresql+psycopg"}


@pytest.fixture
def pooled(pgbouncer_url: str) -> Iterator[str]:
    """The PgBouncer URL (psycopg), with the test tables created empty behind it."""
    database = Database(postgres_url())
    reset_postgres(database)
    database.create_all(Base.metadata)
    with database.Session() as session, session.begin():
        session.add(User(email="ada@example.com", name="Ada"))
    try:
        yield pgbouncer_url
    finally:
        reset_postgres(database)
        database.dispose()


class HeldServerConnection:
    """Another client of the pooler, holding the server connection it was lent in an open
    transaction: PgBouncer lends the most recently used idle server connection first, so the
    next client's statement goes to another server connection than its previous one did."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, connect_args={"prepare_threshold": None})

    def __enter__(self) -> int:
        self.connection = self.engine.connect()
        self.connection.begin()
        return int(self.connection.scalar(text("SELECT pg_backend_pid()")) or 0)

    def __exit__(self, *exc: object) -> None:
        self.connection.rollback()
        self.connection.close()
        self.engine.dispose()


def _server_pid(database: Database) -> int:
    with database.engine.connect() as connection:
        return int(connection.scalar(text("SELECT pg_backend_pid()")) or 0)


def test_the_pooler_lends_a_server_connection_per_transaction_not_per_client(
    pooled: str,
) -> None:
    # One client connection (pool_size=1) sees another server connection once the one it used
    # last is held by someone else: pooling by transaction, not by client.
    database = Database(pooled, {"pool_size": 1, "max_overflow": 0}, transaction_pooling=True)
    try:
        first = _server_pid(database)
        with HeldServerConnection(pooled) as held:
            second = _server_pid(database)
        assert held == first
        assert second != first
        servers = {_server_pid(database) for _ in range(3)}
        assert len(servers) <= POOL_SIZE
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
        # psycopg prepares a query from its fifth run (prepare_threshold=5) on the server
        # connection it then holds; the next run goes to another one.
        _read_the_same_query(uow, 6)
        with HeldServerConnection(pooled):
            if transaction_pooling:
                _read_the_same_query(uow, 2)
            else:
                with pytest.raises(DBAPIError, match=r"prepared statement \S+ does not exist"):
                    _read_the_same_query(uow, 2)
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
            await read(2)  # SQLAlchemy's adapter keeps the statement it prepared
            with HeldServerConnection(pooled):
                if transaction_pooling:
                    await read(2)
                else:
                    with pytest.raises(DBAPIError, match=r"prepared statement \S+ does not exist"):
                        await read(2)
        finally:
            await adb.dispose()

    asyncio.run(scenario())


def test_psycopg_never_prepares_and_keeps_lazy_begin(pooled: str) -> None:
    database = Database(pooled, transaction_pooling=True)
    try:
        assert database.lazy_begin
        with database.engine.connect() as connection:
            assert connection.connection.dbapi_connection.prepare_threshold is None
    finally:
        database.dispose()


def test_connect_args_of_the_caller_win(pooled: str) -> None:
    database = Database(
        pooled, {"connect_args": {"prepare_threshold": 50}}, transaction_pooling=True
    )
    try:
        with database.engine.connect() as connection:
            assert connection.connection.dbapi_connection.prepare_threshold == 50
    finally:
        database.dispose()


@pytest.mark.parametrize(("driver", "lazy"), [("asyncpg", False), ("psycopg-async", True)])
def test_async_drivers_behind_the_pooler(pooled: str, driver: str, lazy: bool) -> None:
    url = make_url(pooled).set(drivername=ASYNC_DRIVERS[driver])
    adb = AsyncDatabase(url, transaction_pooling=True)
    uow = AsyncAppUnitOfWork(adb)

    async def scenario() -> list[Any]:
        try:
            async with uow:
                user = await uow.users.first_or_create(
                    email="grace@example.com", defaults={"name": "Grace"}
                )
                # asyncpg: BEGIN is eager, so even the first read is inside a transaction.
                in_transaction = await uow.session.scalar(
                    text("SELECT now() <> statement_timestamp()")
                )
            async with uow:
                count = await uow.users.count()
            return [user.name, in_transaction, count]
        finally:
            await adb.dispose()

    assert adb.lazy_begin is lazy
    name, in_transaction, count = asyncio.run(scenario())
    assert (name, count) == ("Grace", 2)
    assert in_transaction  # after the INSERT: a transaction on every driver


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
        _read_the_same_query(AppUnitOfWork(database), 6)
        with HeldServerConnection(pooled):
            _read_the_same_query(AppUnitOfWork(database), 2)
    finally:
        database.dispose()
        asyncio.run(adb.dispose())


def test_sqlite_refuses_the_option() -> None:
    with pytest.raises(ValueError, match="transaction_pooling is for PostgreSQL"):
        Database("sqlite://", transaction_pooling=True)
    with pytest.raises(ValueError, match="transaction_pooling is for PostgreSQL"):
        AsyncDatabase("sqlite+aiosqlite://", transaction_pooling=True)
