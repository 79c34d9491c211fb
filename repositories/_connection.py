"""What the session side records on a connection, for the repositories to read.

With lazy BEGIN (see `uow._begin`) a transaction's statements run without an open server
transaction until the first write. The repositories ask whether that has happened: before the
first write there is no earlier work a SAVEPOINT would have to protect. A write sent through
the driver itself (PostgreSQL's COPY, which SQLAlchemy cannot execute) is invisible to the
hook that sends BEGIN, so `repositories._copy` begins the server transaction itself first.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import Session

__all__ = [
    "BEGIN_STATEMENT",
    "BEGUN",
    "FAILED",
    "LAZY",
    "READ_ONLY_OPTION",
    "begin_statement",
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
# The execution option (SQLAlchemy's own, for PostgreSQL) that makes a connection's
# transactions READ ONLY: uow sets it on the connection of a `read_only()` block.
READ_ONLY_OPTION = "postgresql_readonly"


def begin_statement(connection: Connection, default: str = "BEGIN") -> str:
    """What begins the connection's transaction on the server where BEGIN is sent by hand (lazy
    BEGIN): the engine's statement, `BEGIN READ ONLY` for a read-only block's connection."""
    statement: str = connection.info.get(BEGIN_STATEMENT, default)
    if connection.get_execution_options().get(READ_ONLY_OPTION):
        return f"{statement} READ ONLY"
    return statement


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
    # there: ending the server's transaction is the dialect's rollback, nothing more (the
    # driver's rollback(), or, for asyncpg, a ROLLBACK the session side makes it send).
    connection.dialect.do_rollback(connection.connection)
