"""Count round trips on the wire: the statements the PostgreSQL server itself logged.

`scripts/with-postgres` starts the server with `log_statement=all` and a line prefix of
`application_name,pid,`, and exports the log's path as UOW_TEST_POSTGRES_LOG. A test gives its
Database a unique application name (`wire_database`) and reads back what the server received
from it, which SQLAlchemy's events cannot show (the BEGIN and COMMIT a driver sends by itself).
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.util import await_

from tests.conftest import postgres_url
from uow import AsyncDatabase, Database

# "statement: BEGIN" (simple protocol) or "execute <unnamed>: SELECT ..." (extended protocol).
_STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (.*)$", re.DOTALL)


def log_path() -> Path:
    """The server log, or skip (fail when PostgreSQL is required) when there is none."""
    path = os.environ.get("UOW_TEST_POSTGRES_LOG")
    if not path:
        postgres_url()  # skips or fails with the usual reason when there is no server
        pytest.skip("the PostgreSQL server's log is unknown: UOW_TEST_POSTGRES_LOG is unset")
    return Path(path)


def wire_database(**engine_options: Any) -> tuple[Database, str]:
    """A Database on the test server whose connections carry a unique application name."""
    name = f"uow-test-{uuid.uuid4().hex[:12]}"
    options = dict(engine_options)
    options["connect_args"] = {**options.get("connect_args", {}), "application_name": name}
    return Database(postgres_url(), engine_options=options), name


@dataclass
class RoundTrips:
    """What psycopg connections checked out inside `round_trips()` exchanged with the server."""

    lines: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Network round trips: each run of messages the client sent before the server's
        answers (libpq's trace marks client messages F and server messages B)."""
        # A message's text may span lines; only a message's first line names its direction.
        directions = [line[0] for line in self.lines if line[:2] in ("F\t", "B\t")]
        return sum(
            1
            for before, now in zip(["B", *directions], directions, strict=False)
            if now == "F" and before != "F"
        )


@contextmanager
def round_trips(engine: Engine) -> Iterator[RoundTrips]:
    """Trace, with libpq's own protocol trace, every psycopg connection `engine` checks out
    inside the block, and count its round trips on the wire."""
    from psycopg import pq

    trips = RoundTrips()
    traced: list[tuple[Any, Any]] = []

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed at the end of the block)
        dbapi_connection.pgconn.trace(log.fileno())
        dbapi_connection.pgconn.set_trace_flags(
            pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE
        )
        traced.append((dbapi_connection, log))

    event.listen(engine.pool, "checkout", checkout)
    try:
        yield trips
    finally:
        event.remove(engine.pool, "checkout", checkout)
        for dbapi_connection, log in traced:
            dbapi_connection.pgconn.untrace()
            log.seek(0)
            trips.lines.extend(log.read().splitlines())
            log.close()


def async_postgres_url(driver: str) -> str:
    """The test server's URL with an async driver: "psycopg" (async psycopg) or "asyncpg"."""
    url = postgres_url()
    assert url.startswith("postgresql+psycopg://"), url
    return url.replace("postgresql+psycopg://", f"postgresql+{driver}://", 1)


def async_wire_database(driver: str, **engine_options: Any) -> tuple[AsyncDatabase, str]:
    """An AsyncDatabase on the test server (asyncpg or async psycopg) whose connections carry a
    unique application name."""
    name = f"uow-test-{uuid.uuid4().hex[:12]}"
    options = dict(engine_options)
    connect_args = dict(options.get("connect_args", {}))
    if driver == "asyncpg":  # asyncpg takes server settings apart from its own arguments
        settings = {**connect_args.get("server_settings", {}), "application_name": name}
        connect_args["server_settings"] = settings
    else:
        connect_args["application_name"] = name
    options["connect_args"] = connect_args
    return AsyncDatabase(async_postgres_url(driver), engine_options=options), name


@contextmanager
def server_statements(application_name: str) -> Iterator[list[str]]:
    """The statements the server received from `application_name` inside the block, in order.

    Filled in when the block exits. Statements are stripped, with whitespace runs folded.
    """
    path = log_path()
    start = path.stat().st_size
    statements: list[str] = []
    yield statements
    with path.open("rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", errors="replace")
    statements.extend(_statements(text, application_name))


def _statements(text: str, application_name: str) -> list[str]:
    prefix = f"{application_name},"
    found: list[str] = []
    record: list[str] | None = None
    for line in text.splitlines():
        if "," in line and re.match(r"^[^,]*,\d+,[A-Z]+:  ", line):
            record = None  # a new record starts; continuation lines belong to the last one
            if line.startswith(prefix):
                _, _, rest = line.split(",", 2)
                level, _, message = rest.partition(":  ")
                if level == "LOG":
                    record = [message]
                    found.append("")
        elif record is not None:
            record.append(line)
        if record is not None:
            found[-1] = "\n".join(record)
    statements = []
    for message in found:
        match = _STATEMENT.match(message)
        if match:
            statements.append(" ".join(match.group(1).split()))
    return statements


@contextmanager
def sqlite_statements(db: Database | AsyncDatabase) -> Iterator[list[str]]:
    """The statements SQLite itself ran for `db`'s connections opened inside the block.

    sqlite3's trace callback sees what the library sends directly (BEGIN IMMEDIATE, COMMIT),
    which SQLAlchemy's cursor events do not. Use it on a Database whose pool is still empty.
    An AsyncDatabase on aiosqlite works too: its sqlite3 connection is traced, in aiosqlite's
    thread.
    """
    statements: list[str] = []
    engine = db.engine.sync_engine if isinstance(db, AsyncDatabase) else db.engine

    def trace(sql: str) -> None:
        statements.append(" ".join(sql.split()))

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        if driver is dbapi_connection:
            dbapi_connection.set_trace_callback(trace)
        else:  # aiosqlite (behind SQLAlchemy's adapter): sqlite3 is called in its thread
            await_(driver.set_trace_callback(trace))

    event.listen(engine.pool, "connect", on_connect)
    try:
        yield statements
    finally:
        event.remove(engine.pool, "connect", on_connect)


@pytest.fixture
def wired() -> Iterator[tuple[Database, str]]:
    """A PostgreSQL Database with the test tables, one user and a warm pool, and the
    application name its statements carry in the server log."""
    from tests.conftest import reset_postgres
    from tests.models import AppUnitOfWork, Base

    db, name = wire_database()
    reset_postgres(db)
    db.create_all(Base.metadata)
    with AppUnitOfWork(db) as uow:
        uow.users.create(email="ada@example.com", name="Ada")
    yield db, name
    db.s.remove()
    reset_postgres(db)
    db.dispose()


ASYNC_DRIVERS = ["psycopg", "asyncpg", "aiosqlite"]


@dataclass
class AsyncWire:
    """An AsyncDatabase and what its connections send, as the server (or SQLite) saw it."""

    adb: AsyncDatabase
    driver: str  # "psycopg" (async psycopg), "asyncpg" or "aiosqlite"
    application_name: str = ""  # PostgreSQL: what the server log tags its statements with
    sqlite_log: list[str] = field(default_factory=list)  # SQLite: every statement traced

    @property
    def is_sqlite(self) -> bool:
        return self.driver == "aiosqlite"

    @contextmanager
    def statements(self) -> Iterator[list[str]]:
        """The statements sent inside the block, filled in when it exits (SQLite's PRAGMAs at
        connect left out)."""
        if not self.is_sqlite:
            with server_statements(self.application_name) as sent:
                yield sent
            return
        start = len(self.sqlite_log)
        traced: list[str] = []
        yield traced
        traced.extend(s for s in self.sqlite_log[start:] if not s.startswith("PRAGMA"))


async def reset_async_postgres(adb: AsyncDatabase) -> None:
    """Drop and recreate the public schema; fails, rather than waits for ever, when a
    transaction left open (a broken test) holds a lock on a table."""
    async with adb.engine.begin() as connection:
        await connection.execute(text("SET LOCAL lock_timeout = '30s'"))
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))


@pytest.fixture(params=ASYNC_DRIVERS)
async def async_wired(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncWire]:
    """An AsyncDatabase on each async driver with the test tables, one user (ada@example.com)
    and a warm pool, whose statements a test reads with `wire.statements()`."""
    from tests.models import Base, User

    driver = str(request.param)
    with ExitStack() as stack:
        if driver == "aiosqlite":
            wire = AsyncWire(AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path / 'wire.db'}"), driver)
            # Every connection the pool opens, traced from its first statement.
            wire.sqlite_log = stack.enter_context(sqlite_statements(wire.adb))
        else:
            adb, name = async_wire_database(driver)
            wire = AsyncWire(adb, driver, application_name=name)
            await reset_async_postgres(adb)
        await wire.adb.create_all(Base.metadata)
        async with wire.adb.Session() as session, session.begin():
            session.add(User(email="ada@example.com", name="Ada"))
        yield wire
        await wire.adb.s.remove()
        if not wire.is_sqlite:
            await reset_async_postgres(wire.adb)
    await wire.adb.dispose()
