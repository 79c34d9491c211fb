"""When a transaction begins on the server: lazily, at the first write, where that is safe.

At READ COMMITTED (PostgreSQL's default) every statement sees the data committed before it
started, inside a transaction or not. So the reads of a block that has not written yet can run
without one: a read-only block that gets one row sends exactly that SELECT (no BEGIN, no
COMMIT or ROLLBACK), and on SQLite a read-only block never takes the write lock. The driver
runs in autocommit mode; just before the first write of a transaction (a flush, a bulk
statement, `UPDATE`/`DELETE`, a `SELECT ... FOR UPDATE`, a SAVEPOINT, DDL, or any SQL text,
which cannot be told apart from a write) we send BEGIN ourselves, and the driver's `commit()`
and `rollback()` end that transaction (psycopg 3 and sqlite3 send COMMIT/ROLLBACK whenever
the server is in a transaction, autocommit or not, and nothing otherwise).

Eager BEGIN (a transaction from the first statement) stays where reads must share a snapshot:
REPEATABLE READ and SERIALIZABLE, and when the user opts out (`lazy_begin=False`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.sql import Select

from repositories._connection import BEGIN_STATEMENT, BEGUN, LAZY

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine, ExecutionContext

__all__ = ["install", "install_eager", "supports_lazy_begin"]

# The drivers whose commit() and rollback() end a transaction that was begun by hand while
# the connection is in autocommit mode (psycopg2, for one, would leave it open).
_LAZY_DRIVERS = frozenset({("postgresql", "psycopg"), ("sqlite", "pysqlite")})
_SNAPSHOT_LEVELS = frozenset({"REPEATABLE READ", "SERIALIZABLE"})


def supports_lazy_begin(url: URL, engine_options: dict[str, Any]) -> bool:
    """Whether lazy BEGIN is safe for this URL and these engine options."""
    driver = (url.get_backend_name(), url.get_driver_name())
    level = str(engine_options.get("isolation_level", "")).upper().replace("_", " ")
    return driver in _LAZY_DRIVERS and level not in _SNAPSHOT_LEVELS and level != "AUTOCOMMIT"


def install(engine: Engine, begin_statement: str) -> None:
    """Send `begin_statement` before the first write of each transaction on `engine`.

    The engine must run its driver in autocommit mode (`isolation_level="AUTOCOMMIT"`).
    """

    def on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info[LAZY] = True
        # For writes sent through the driver, which this module's hook never sees (COPY).
        record.info[BEGIN_STATEMENT] = begin_statement

    def before_cursor_execute(
        connection: Connection,
        cursor: Any,
        _statement: str,
        _parameters: Any,
        context: ExecutionContext | None,
        _executemany: bool,
    ) -> None:
        info = connection.info
        if info.get(BEGUN) or not connection.in_transaction() or _is_plain_read(context):
            return
        # On the connection, not `cursor`: that may be a server-side cursor, which would
        # wrap the statement in DECLARE.
        connection.connection.dbapi_connection.execute(begin_statement)  # type: ignore[union-attr]
        info[BEGUN] = True

    event.listen(engine.pool, "connect", on_connect)
    event.listen(engine, "before_cursor_execute", before_cursor_execute)
    for name in ("begin", "commit", "rollback"):
        event.listen(engine, name, _not_begun)


def install_eager(engine: Engine, begin_statement: str) -> None:
    """Send `begin_statement` when each transaction begins (for a driver that sends no BEGIN of
    its own, as pysqlite once told to stay out of transactions)."""

    def on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(begin_statement)

    event.listen(engine, "begin", on_begin)


def _not_begun(connection: Connection) -> None:
    # At SQLAlchemy's BEGIN too: the pool may have ended the last transaction itself.
    if not connection.invalidated:
        connection.info.pop(BEGUN, None)


def _is_plain_read(context: ExecutionContext | None) -> bool:
    """A SELECT that locks nothing and streams nothing: safe outside a transaction at READ
    COMMITTED (a server-side cursor, as `iterator()` uses, needs a transaction)."""
    if context is None or context.execution_options.get("stream_results"):
        return False
    statement = getattr(context.compiled, "statement", None)
    # Not public: where SQLAlchemy keeps a SELECT's FOR UPDATE / FOR SHARE clause.
    return isinstance(statement, Select) and statement._for_update_arg is None
