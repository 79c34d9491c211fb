"""Engine hooks that keep transactions honest: released savepoints, no commit of an aborted one.

Two things the drivers do not do for us:

- `ROLLBACK TO SAVEPOINT` leaves the savepoint in place, so the next one nests inside it; a long
  transaction with many rolled-back savepoints piles up subtransactions (PostgreSQL caches 64 per
  backend, then every snapshot slows down). Like Django (ticket 23074) we RELEASE it right after.
- On PostgreSQL an error aborts the whole transaction, and a COMMIT of an aborted transaction is
  answered with ROLLBACK, which psycopg reports as success: an error caught inside a block would
  silently lose the block's work. We remember the error on the connection and refuse the COMMIT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from repositories._connection import FAILED, has_written
from repositories._dialects import aborts_transaction_on_error
from uow.errors import UnitOfWorkError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, ExceptionContext

__all__ = ["aborted", "install"]


def install(engine: Engine) -> None:
    """Release rolled-back savepoints, and refuse to commit a transaction an error aborted."""
    dialect: Any = engine.dialect
    rollback_to, release = dialect.do_rollback_to_savepoint, dialect.do_release_savepoint

    def rollback_to_and_release(connection: Connection, name: str) -> None:
        rollback_to(connection, name)
        release(connection, name)

    # The dialect object belongs to this engine alone (create_engine makes one per engine).
    dialect.do_rollback_to_savepoint = rollback_to_and_release
    if not aborts_transaction_on_error(dialect.name):
        return
    event.listen(engine, "handle_error", _remember_failure)
    event.listen(engine, "begin", _forget_failure)
    event.listen(engine, "rollback", _forget_failure)
    event.listen(engine, "rollback_savepoint", _forget_failure_in_savepoint)
    event.listen(engine, "commit", _refuse_aborted_commit)


def _remember_failure(context: ExceptionContext) -> None:
    connection = context.connection
    # A lost connection is invalidated and its transaction gone: nothing left to protect. A
    # read before lazy BEGIN ran outside any server transaction: nothing was aborted.
    if connection is None or context.is_disconnect or not connection.in_transaction():
        return
    if not has_written(connection):
        return
    connection.info.setdefault(FAILED, context.sqlalchemy_exception or context.original_exception)


def _forget_failure(connection: Connection) -> None:
    # At BEGIN too: the pool may have rolled the connection back itself, without this event.
    # An invalidated connection has no info to read (and gets a fresh one when it reconnects).
    if not connection.invalidated:
        connection.info.pop(FAILED, None)


def _forget_failure_in_savepoint(connection: Connection, _name: str, _context: object) -> None:
    # The aborted transaction cannot open a savepoint, so an error recorded now happened inside
    # the savepoint being rolled back: rolling back to it makes the transaction usable again.
    _forget_failure(connection)


def _refuse_aborted_commit(connection: Connection) -> None:
    error = None if connection.invalidated else connection.info.get(FAILED)
    if error is None:
        return
    raise aborted(error) from error


def aborted(error: BaseException) -> UnitOfWorkError:
    """The error for a commit refused because `error`, caught earlier, aborted the transaction."""
    return UnitOfWorkError(
        f"the transaction was aborted by an error caught inside it ({type(error).__name__}: "
        f"{_first_line(error)}), so nothing was committed. Put the part that may fail in a "
        "nested `with uow:` block (a savepoint): its failure then rolls back only that part"
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
