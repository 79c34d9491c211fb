"""Engine hooks that keep transactions honest: released savepoints, no commit of an aborted one.

Two things the drivers do not do for us:

- `ROLLBACK TO SAVEPOINT` leaves the savepoint in place, so the next one nests inside it; a long
  transaction with many rolled-back savepoints piles up subtransactions (PostgreSQL caches 64 per
  backend, then every snapshot slows down). Like Django (ticket 23074) we RELEASE it right after.
- On PostgreSQL an error aborts the whole transaction, and a COMMIT of an aborted transaction is
  answered with ROLLBACK, which psycopg reports as success: an error caught inside a block would
  silently lose the block's work. We refuse that COMMIT (rolling back instead), chained to the
  error that aborted the transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from repositories._connection import BEGUN, FAILED, has_written
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
    # Not at "commit": that event comes before the COMMIT, which must still see the failure.
    for name in ("begin", "rollback"):
        event.listen(engine, name, _forget_transaction)
    if not aborts_transaction_on_error(dialect.name):
        return
    commit = dialect.do_commit

    def commit_unless_aborted(connection: Any) -> None:
        # `connection` is the pool's proxy: its `info` is the connection's, as in the events.
        error = connection.info.get(FAILED)
        if not _aborted(connection.dbapi_connection, error):
            commit(connection)
            return
        # Roll back here, before raising: SQLAlchemy marks its transaction finished when its
        # COMMIT fails, and would not send a ROLLBACK afterwards.
        connection.dbapi_connection.rollback()
        raise aborted(error) from error

    dialect.do_commit = commit_unless_aborted
    event.listen(engine, "handle_error", _remember_failure)
    event.listen(engine, "rollback_savepoint", _forget_failure_in_savepoint)


def _aborted(dbapi_connection: Any, error: BaseException | None) -> bool:
    """Whether the server transaction is aborted: psycopg knows exactly; for other drivers the
    last error recorded in it stands for that (an error the client raised before sending
    anything aborts nothing, and psycopg's answer tells it apart)."""
    info = getattr(dbapi_connection, "info", None)
    status = getattr(getattr(info, "transaction_status", None), "name", None)
    if status is not None:
        return bool(status == "INERROR")
    return error is not None


def _remember_failure(context: ExceptionContext) -> None:
    connection = context.connection
    # A lost connection is invalidated and its transaction gone: nothing left to protect. A
    # read before lazy BEGIN ran outside any server transaction: nothing was aborted.
    if connection is None or context.is_disconnect or not connection.in_transaction():
        return
    if not has_written(connection):
        return
    connection.info.setdefault(FAILED, context.sqlalchemy_exception or context.original_exception)


def _forget_transaction(connection: Connection) -> None:
    # At BEGIN too: the pool may have ended the last transaction itself, without these events.
    # An invalidated connection has no info to read (and gets a fresh one when it reconnects).
    if not connection.invalidated:
        connection.info.pop(BEGUN, None)  # lazy BEGIN (uow._begin): not begun on the server
        connection.info.pop(FAILED, None)


def _forget_failure_in_savepoint(connection: Connection, _name: str, _context: object) -> None:
    # The aborted transaction cannot open a savepoint, so an error recorded now happened inside
    # the savepoint being rolled back: rolling back to it makes the transaction usable again.
    if not connection.invalidated:
        connection.info.pop(FAILED, None)


def aborted(error: BaseException | None) -> UnitOfWorkError:
    """The error for a commit refused because `error`, caught earlier, aborted the transaction."""
    caught = f" ({type(error).__name__}: {_first_line(error)})" if error is not None else ""
    return UnitOfWorkError(
        f"the transaction was aborted by an error caught inside it{caught}, so nothing was "
        "committed. Put the part that may fail in a nested `with uow:` block (a savepoint): "
        "its failure then rolls back only that part"
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
