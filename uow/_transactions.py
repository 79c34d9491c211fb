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

from sqlalchemy.exc import DBAPIError, EmulatedDBAPIException

from repositories._connection import BEGUN, FAILED, has_written
from repositories._dialects import aborts_transaction_on_error
from uow._begin import Execute, ExecuteCall, around_each_execution
from uow.errors import UnitOfWorkError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["aborted", "install"]


def install(engine: Engine) -> None:
    """Release rolled-back savepoints, and refuse to commit a transaction an error aborted.

    Everything goes through the dialect's methods (one dialect object per engine), not event
    listeners: an engine with execution listeners takes SQLAlchemy's slower path for every
    statement.
    """
    dialect: Any = engine.dialect
    rollback_to, release = dialect.do_rollback_to_savepoint, dialect.do_release_savepoint
    begin, rollback = dialect.do_begin, dialect.do_rollback

    def rollback_to_and_release(connection: Connection, name: str) -> None:
        # The aborted transaction cannot open a savepoint, so an error recorded now happened
        # inside the savepoint being rolled back: rolling back to it makes it usable again.
        if not connection.invalidated:
            connection.info.pop(FAILED, None)
        rollback_to(connection, name)
        release(connection, name)

    def begin_afresh(pooled: Any) -> None:
        _forget_transaction(pooled)
        begin(pooled)

    def rollback_and_forget(pooled: Any) -> None:
        # At BEGIN too: the pool may end a transaction by itself, through this method or not.
        _forget_transaction(pooled)
        if not _no_transaction(pooled):
            rollback(pooled)

    dialect.do_rollback_to_savepoint = rollback_to_and_release
    dialect.do_begin = begin_afresh
    dialect.do_rollback = rollback_and_forget
    if not aborts_transaction_on_error(dialect.name):
        return
    commit = dialect.do_commit

    def commit_unless_aborted(pooled: Any) -> None:
        # `pooled` is the pool's proxy of the connection: its `info` is the connection's.
        error = pooled.info.get(FAILED)
        if not _aborted(pooled.dbapi_connection, error):
            if not _no_transaction(pooled):
                commit(pooled)
            return
        # Roll back here, before raising: SQLAlchemy marks its transaction finished when its
        # COMMIT fails, and would not send a ROLLBACK afterwards. Through the dialect, whose
        # rollback ends a transaction begun by hand on every driver (asyncpg: uow._begin).
        dialect.do_rollback(pooled)
        raise aborted(error) from error

    dialect.do_commit = commit_unless_aborted

    def release_unless_aborted(connection: Connection, name: str) -> None:
        # A nested block that caught an error and left cleanly: its savepoint is aborted, and
        # RELEASE would fail with "current transaction is aborted", leaving the whole
        # transaction so. Roll back to the savepoint instead (the outer transaction goes on)
        # and say what was lost.
        error = connection.info.get(FAILED)
        if not _aborted(connection.connection.dbapi_connection, error):
            release(connection, name)
            return
        rollback_to_and_release(connection, name)
        raise aborted_savepoint(error) from error

    dialect.do_release_savepoint = release_unless_aborted

    def remembering_failures(execute: Execute, call: ExecuteCall) -> None:
        try:
            execute(call)
        except Exception as error:
            if call.connection is not None:
                _remember(call.connection, dialect, error, call)
            raise

    around_each_execution(engine, remembering_failures)


def _no_transaction(pooled: Any) -> bool:
    """Whether the driver says its connection has no transaction open, so that its commit()
    and rollback() would do nothing (lazy BEGIN: a block that did not write). Known locally, no
    round trip: psycopg 3 (sync, or async behind SQLAlchemy's adapter) outside pipeline mode,
    and sqlite3 (under aiosqlite too). Other drivers are always asked to commit or roll back."""
    dbapi_connection = getattr(pooled, "dbapi_connection", pooled)  # the pool's proxy, or bare
    if dbapi_connection is None:
        return False
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    module = type(driver).__module__
    if module == "psycopg" or module.startswith("psycopg."):  # not psycopg2
        return bool(driver.pgconn.transaction_status == _PSYCOPG_IDLE) and not driver._pipeline
    if module == "sqlite3" or module.startswith("aiosqlite."):
        return not driver.in_transaction
    return False


_PSYCOPG_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE


def _aborted(dbapi_connection: Any, error: BaseException | None) -> bool:
    """Whether the server transaction is aborted.

    psycopg knows exactly (sync, or async through SQLAlchemy's adapter, which passes its `info`
    on). For other drivers the last error recorded in the transaction stands for that, unless
    the driver says the server never sent it: an error the client raised before sending
    anything (asyncpg encoding a parameter) aborted nothing.
    """
    info = getattr(dbapi_connection, "info", None)
    status = getattr(getattr(info, "transaction_status", None), "name", None)
    if status is not None:
        return bool(status == "INERROR")
    return error is not None and _sent_by_server(error)


def _sent_by_server(error: BaseException) -> bool:
    """Whether the server raised `error` (SQLAlchemy's), as far as the driver tells."""
    dbapi_error = getattr(error, "orig", None)
    if isinstance(dbapi_error, EmulatedDBAPIException):  # asyncpg, behind SQLAlchemy's adapter
        # asyncpg fills in the fields of the server's error message (its severity is always
        # sent); an error asyncpg raises itself leaves them empty, even when its class names a
        # SQLSTATE (a parameter it cannot encode is a DataError, "22000").
        return getattr(dbapi_error.orig, "severity", None) is not None
    return getattr(dbapi_error, "sqlstate", "unknown") is not None


def _remember(connection: Connection, dialect: Any, error: Exception, call: ExecuteCall) -> None:
    # A read before lazy BEGIN ran outside any server transaction: nothing was aborted. A lost
    # connection is invalidated and its transaction gone: nothing left to protect.
    try:
        if not connection.in_transaction() or not has_written(connection):
            return
    except NotImplementedError:
        return  # the bare connection SQLAlchemy sets its dialect up on, at first connect
    dbapi_connection = connection.connection.dbapi_connection
    if dialect.is_disconnect(error, dbapi_connection, call.cursor):
        return
    # As SQLAlchemy will wrap it (an IntegrityError for a unique violation), for the cause.
    wrapped = DBAPIError.instance(
        call.statement, call.parameters, error, dialect.loaded_dbapi.Error, dialect=dialect
    )
    connection.info.setdefault(FAILED, wrapped)


def _forget_transaction(pooled: Any) -> None:
    try:
        info = pooled.info
    except (AttributeError, NotImplementedError):
        return  # the bare connection SQLAlchemy sets its dialect up on: nothing recorded
    info.pop(BEGUN, None)  # lazy BEGIN (uow._begin): not begun on the server
    info.pop(FAILED, None)


def aborted(error: BaseException | None) -> UnitOfWorkError:
    """The error for a commit refused because `error`, caught earlier, aborted the transaction."""
    caught = f" ({type(error).__name__}: {_first_line(error)})" if error is not None else ""
    return UnitOfWorkError(
        f"the transaction was aborted by an error caught inside it{caught}, so nothing was "
        "committed. Put the part that may fail in a nested `with uow:` block (a savepoint): "
        "its failure then rolls back only that part"
    )


def aborted_savepoint(error: BaseException | None) -> UnitOfWorkError:
    """The error for a nested block left cleanly after `error`, caught inside it, aborted its
    savepoint: the block's work was rolled back; the enclosing block goes on."""
    caught = f" ({type(error).__name__}: {_first_line(error)})" if error is not None else ""
    return UnitOfWorkError(
        f"a nested block's savepoint was aborted by an error caught inside it{caught}, so its "
        "work was rolled back; the enclosing block goes on. Let the error leave the nested "
        "block (or catch it outside it) to roll it back without this error"
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
