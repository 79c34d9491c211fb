"""What the session side records on a connection, for the repositories to read.

With lazy BEGIN (see `uow._begin`) a transaction's statements run without an open server
transaction until the first write. The repositories ask whether that has happened: before the
first write there is no earlier work a SAVEPOINT would have to protect. A write sent through
the driver itself (PostgreSQL's COPY, which SQLAlchemy cannot execute) is invisible to the
hook that sends BEGIN, so it begins the server transaction here first.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

__all__ = [
    "BEGIN_STATEMENT",
    "BEGUN",
    "FAILED",
    "LAZY",
    "copy_rows",
    "has_written",
    "protected_write",
]

# connection.info keys. LAZY: the engine begins server transactions lazily. BEGIN_STATEMENT:
# what it sends to begin one ("BEGIN", SQLite's "BEGIN IMMEDIATE"). BEGUN: the current
# transaction has begun on the server (its first write has been sent, or is being sent).
# FAILED: the error that aborted the current server transaction (see uow._transactions).
LAZY = "uow_lazy_begin"
BEGIN_STATEMENT = "uow_begin_statement"
BEGUN = "uow_begun_on_server"
FAILED = "uow_transaction_failed_by"


def has_written(connection: Connection) -> bool:
    """Whether the current transaction may hold writes: True unless lazy BEGIN says it has not
    begun on the server yet (an engine without lazy BEGIN cannot tell, so it says True)."""
    info = connection.info
    return not info.get(LAZY, False) or bool(info.get(BEGUN, False))


@contextmanager
def protected_write(session: Session, model: type[Any]) -> Iterator[None]:
    """Run a write whose failure must leave the transaction as it was, and usable.

    After earlier writes, that takes a SAVEPOINT. When this is the transaction's first write
    (lazy BEGIN has not begun it on the server yet) there is nothing earlier to protect, so no
    SAVEPOINT is sent: on failure the server transaction just begun for it is rolled back, and
    the block goes on as if the write had never been tried. The session must have been flushed.
    """
    connection = session.connection(bind_arguments={"mapper": inspect(model)})
    if has_written(connection):
        with session.begin_nested():
            yield
        return
    try:
        yield
    except BaseException:
        _roll_back_first_write(connection)
        raise


def _roll_back_first_write(connection: Connection) -> None:
    info = connection.info
    if connection.invalidated or not info.pop(BEGUN, False):
        return  # the connection is gone, or the write never reached the server
    info.pop(FAILED, None)
    # The driver is in autocommit mode and SQLAlchemy's transaction is only bookkeeping
    # there: ending the server's transaction is the driver's rollback(), nothing more.
    connection.connection.dbapi_connection.rollback()  # type: ignore[union-attr]


def copy_rows(connection: Connection, statement: str, rows: Iterable[Sequence[Any]]) -> None:
    """Send `rows` with psycopg 3's COPY (`statement` is `COPY table (columns) FROM STDIN`).

    It runs in `connection`'s transaction, through its driver connection, so SQLAlchemy's
    events do not see it: a transaction lazy BEGIN has not begun yet is begun on the server
    first, as for any write. A driver error comes out as SQLAlchemy's (`IntegrityError` for a
    unique violation), as from `connection.execute`; a lost connection is invalidated.
    """
    _begin_on_server(connection)
    dbapi_connection: Any = connection.connection.dbapi_connection
    dialect = connection.dialect
    dbapi_error: Any = dialect.loaded_dbapi.Error
    try:
        with dbapi_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except dbapi_error as error:
        lost = dialect.is_disconnect(error, dbapi_connection, None)
        wrapped = DBAPIError.instance(
            statement, None, error, dbapi_error, connection_invalidated=lost, dialect=dialect
        )
        if lost:
            connection.invalidate(error)
        elif has_written(connection):
            # What uow._transactions records for a failed statement it sees: the COMMIT of
            # the transaction this aborted is refused (protected_write clears it).
            connection.info.setdefault(FAILED, wrapped)
        raise wrapped from error


def _begin_on_server(connection: Connection) -> None:
    info = connection.info
    if not info.get(LAZY, False) or info.get(BEGUN, False) or not connection.in_transaction():
        return  # eager BEGIN (the driver begins by itself), already begun, or autocommit
    # The same statement, sent the same way, as uow._begin's hook before a statement it sees.
    connection.connection.dbapi_connection.execute(info.get(BEGIN_STATEMENT, "BEGIN"))  # type: ignore[union-attr]
    info[BEGUN] = True
