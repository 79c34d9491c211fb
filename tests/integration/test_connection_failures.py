"""What a dead or slow server connection does to a unit of work, on a real PostgreSQL server.

A server restart, a failover or an administrator's `pg_terminate_backend` all look the same to a
pooled connection: its backend is gone, and the pool does not know until the connection is used.
The tests kill every backend of a warm pool from a separate connection and run units of work;
the first started as a failing test for issue 9, item 11. The others pin down what the docs
("Connection failures" in docs/dependency-injection.md) say a lost connection or a timeout does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import NullPool, QueuePool

from tests.conftest import postgres_url, reset_postgres
from tests.integration.helpers import add_user, committed_emails
from tests.models import AppUnitOfWork, Base
from uow import Database
from uow.settings import DatabaseSettings

POOL_SIZE = 3
WAIT = 30  # seconds: only how long a broken test may hang, never a delay a passing test takes


@pytest.fixture
def databases() -> Iterator[list[Database]]:
    """The Databases a test adds to this list, on fresh test tables; disposed afterwards."""
    tables = Database(postgres_url())
    reset_postgres(tables)
    tables.create_all(Base.metadata)
    made: list[Database] = []
    yield made
    for database in made:
        database.s.remove()
        database.dispose()
    reset_postgres(tables)
    tables.dispose()


def postgres_database(databases: list[Database], **engine_options: Any) -> Database:
    """A Database on the test server with a pool of POOL_SIZE, disposed after the test."""
    options = {"pool_size": POOL_SIZE, **engine_options}
    database = Database(postgres_url(), engine_options=options)
    databases.append(database)
    return database


def warm_pool(db: Database) -> set[int]:
    """Check out POOL_SIZE connections at once, then check them all in: the backends' pids."""
    connections = [db.engine.connect() for _ in range(POOL_SIZE)]
    pids = {c.execute(text("SELECT pg_backend_pid()")).scalar_one() for c in connections}
    for connection in connections:
        connection.close()
    assert isinstance(db.engine.pool, QueuePool)
    assert db.engine.pool.checkedin() == POOL_SIZE
    return pids


def kill_backends(pids: set[int]) -> None:
    """Terminate the backends from a connection of their own, as a server restart would.

    The timeout makes `pg_terminate_backend` wait until each backend has really exited, so
    the test never races the server's signal handling.
    """
    admin = create_engine(postgres_url(), poolclass=NullPool)
    try:
        with admin.connect() as connection:
            for pid in pids:
                terminated = connection.execute(
                    text("SELECT pg_terminate_backend(:pid, :timeout)"),
                    {"pid": pid, "timeout": WAIT * 1000},
                ).scalar_one()
                assert terminated, f"backend {pid} was not terminated"
    finally:
        admin.dispose()


def current_pid(uow: AppUnitOfWork) -> int:
    return int(uow.session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_units_of_work_succeed_after_every_pooled_backend_was_killed(
    databases: list[Database],
) -> None:
    db = postgres_database(databases)  # pool_pre_ping left to the library: on for PostgreSQL
    killed = warm_pool(db)
    kill_backends(killed)

    uow = AppUnitOfWork(db)
    pids: list[int] = []
    # All the pool's connections in use at once, so each dead one is checked out.
    together = threading.Barrier(POOL_SIZE, timeout=WAIT)
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            with uow:
                add_user(uow, f"user{number}@example.com")
                pids.append(current_pid(uow))
                together.wait()
        except BaseException as error:  # reported below, with the others
            errors.append(error)
            together.abort()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(POOL_SIZE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    assert not killed & set(pids)  # every block ran on a new backend
    with uow:
        add_user(uow, "after@example.com")
    expected = {f"user{n}@example.com" for n in range(POOL_SIZE)} | {"after@example.com"}
    assert committed_emails(db) == expected


@pytest.mark.parametrize("turned_off_by", ["engine_options", "DATABASE_POOL_PRE_PING"])
def test_without_pre_ping_the_first_unit_of_work_after_the_kill_fails_and_the_next_succeeds(
    databases: list[Database], monkeypatch: pytest.MonkeyPatch, turned_off_by: str
) -> None:
    if turned_off_by == "engine_options":
        db = postgres_database(databases, pool_pre_ping=False)
    else:
        monkeypatch.setenv("DATABASE_URL", postgres_url())
        monkeypatch.setenv("DATABASE_POOL_SIZE", str(POOL_SIZE))
        monkeypatch.setenv("DATABASE_POOL_PRE_PING", "false")
        db = DatabaseSettings().create_database()
        databases.append(db)
    kill_backends(warm_pool(db))

    uow = AppUnitOfWork(db)
    ran: list[str] = []
    with pytest.raises(OperationalError) as caught, uow:
        uow.on_commit(lambda: ran.append("on_commit"))
        add_user(uow, "lost@example.com")
    # SQLAlchemy recognised a disconnect: it discarded that connection and marked the pool's
    # other connections stale, so the next checkout connects afresh.
    assert caught.value.connection_invalidated
    assert ran == []
    with uow:
        add_user(uow, "next@example.com")
    assert committed_emails(db) == {"next@example.com"}


def test_a_backend_killed_inside_a_block_fails_that_block_and_the_next_block_reconnects(
    databases: list[Database],
) -> None:
    db = postgres_database(databases)
    uow = AppUnitOfWork(db)
    ran: list[str] = []
    with pytest.raises(OperationalError) as caught, uow:
        uow.on_commit(lambda: ran.append("on_commit"))
        add_user(uow, "lost@example.com")
        session = uow.session
        kill_backends({current_pid(uow)})
        add_user(uow, "also-lost@example.com")  # pre-ping only guards the checkout
    assert caught.value.connection_invalidated
    assert ran == []
    assert db.s() is not session  # the block closed and forgot its session
    with uow:
        add_user(uow, "next@example.com")
    assert committed_emails(db) == {"next@example.com"}


def test_a_statement_timeout_fails_the_block_and_leaves_the_connection_usable(
    databases: list[Database],
) -> None:
    db = postgres_database(databases)
    uow = AppUnitOfWork(db)
    with pytest.raises(OperationalError, match="statement timeout") as caught, uow:
        add_user(uow, "lost@example.com")
        pid = current_pid(uow)
        uow.session.execute(text("SET LOCAL statement_timeout = 100"))  # milliseconds
        uow.session.execute(text("SELECT pg_sleep(10)"))
    assert not caught.value.connection_invalidated
    with uow:
        add_user(uow, "next@example.com")
        assert current_pid(uow) == pid  # the same connection, back from the pool
    assert committed_emails(db) == {"next@example.com"}


def test_a_pool_with_no_free_connection_raises_timeout_error_after_pool_timeout(
    databases: list[Database],
) -> None:
    db = postgres_database(databases, max_overflow=0, pool_timeout=0.05)
    held = [db.engine.connect() for _ in range(POOL_SIZE)]
    try:
        with pytest.raises(PoolTimeoutError, match="QueuePool limit"), AppUnitOfWork(db) as uow:
            add_user(uow, "waits@example.com")
    finally:
        for connection in held:
            connection.close()
