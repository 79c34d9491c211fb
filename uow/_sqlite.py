"""SQLite engine set-up: working SAVEPOINTs, WAL, a busy timeout, foreign keys.

pysqlite begins transactions itself, late and only before DML, which breaks SAVEPOINT and
transactional DDL. As SQLAlchemy's docs describe ("Serializable isolation / Savepoints /
Transactional DDL"), we switch its handling off and send BEGIN ourselves (uow._begin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import event

if TYPE_CHECKING:
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
