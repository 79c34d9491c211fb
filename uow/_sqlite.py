"""SQLite engine set-up: working SAVEPOINTs, WAL, a busy timeout, foreign keys.

pysqlite begins transactions itself, late and only before DML, which breaks SAVEPOINT and
transactional DDL. As SQLAlchemy's docs describe ("Serializable isolation / Savepoints /
Transactional DDL"), we switch its handling off and send BEGIN ourselves (uow._begin).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import event
from sqlalchemy.util import await_
from sqlalchemy.util.concurrency import in_greenlet

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import URL, Engine

TransactionMode = Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"]


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def is_file_database(url: URL) -> bool:
    """Whether a SQLite URL names a file (WAL applies) rather than an in-memory database."""
    database = url.database or ""
    return database not in ("", ":memory:") and url.query.get("mode") != "memory"


# The drivers whose connections we configure: pysqlite and aiosqlite (which wraps sqlite3).
_DRIVERS = frozenset({"pysqlite", "aiosqlite", ""})


def is_configurable(url: URL) -> bool:
    """Whether `url` is SQLite through a driver built on the standard sqlite3 module."""
    return url.get_backend_name() == "sqlite" and url.get_driver_name() in _DRIVERS


def begin_statement(transaction_mode: TransactionMode) -> str:
    """The statement that begins a transaction in `transaction_mode`."""
    return "BEGIN" if transaction_mode == "DEFERRED" else f"BEGIN {transaction_mode}"


def configure(engine: Engine) -> None:
    """Install the connect hook on a pysqlite or aiosqlite engine (`uow._begin` sends BEGIN)."""
    wal = is_file_database(engine.url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from emitting BEGIN (and COMMIT before DDL) on its own.
        dbapi_connection.isolation_level = None
        # SQLite's lower() folds ASCII only; Python's folds all of Unicode, as PostgreSQL
        # does, so iexact/icontains mean the same on both.
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    if engine.dialect.driver == "aiosqlite":
        _end_only_open_transactions(engine)
        _roll_back_before_terminating(engine)


def _in_transaction(adapter: Any) -> bool:
    """Whether aiosqlite's sqlite3 connection is in a transaction: sqlite3 answers locally,
    without the trip through aiosqlite's worker thread every call of the adapter takes."""
    connection = getattr(adapter.driver_connection, "_conn", None)  # None: closed
    return connection is not None and bool(connection.in_transaction)


def _end_only_open_transactions(engine: Engine) -> None:
    """Skip COMMIT and ROLLBACK calls when no transaction is open (a read-only block, with lazy
    BEGIN): sqlite3 would do nothing, but aiosqlite would still hop to its thread and back."""
    dialect: Any = engine.dialect  # one per engine: create_engine makes a new one

    def only_when_open(end: Callable[[Any], None]) -> Callable[[Any], None]:
        def end_if_open(pooled: Any) -> None:
            adapter = getattr(pooled, "dbapi_connection", pooled)  # the pool's proxy, or bare
            if _in_transaction(adapter):
                end(pooled)

        return end_if_open

    dialect.do_commit = only_when_open(dialect.do_commit)
    dialect.do_rollback = only_when_open(dialect.do_rollback)


def _roll_back_before_terminating(engine: Engine) -> None:
    """Roll back before SQLAlchemy terminates an aiosqlite connection (a task cancelled while
    its query ran): sqlite3 defers closing a connection whose statement has not finished, so
    the transaction, and the database's write lock, would last until the garbage collector
    found the cursor, and the next writer would wait out the busy timeout."""
    dialect: Any = engine.dialect
    terminate = dialect.do_terminate

    def roll_back_then_terminate(adapter: Any) -> None:
        if in_greenlet():  # outside it (garbage collection) nothing can be awaited
            try:
                await_(asyncio.shield(adapter.driver_connection.rollback()))
            except asyncio.CancelledError:
                terminate(adapter)
                raise
            except Exception:
                pass
        terminate(adapter)

    dialect.do_terminate = roll_back_then_terminate
