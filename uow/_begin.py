"""When a transaction begins on the server: lazily, at the first write, where that is safe.

At READ COMMITTED (PostgreSQL's default) every statement sees the data committed before it
started, inside a transaction or not. So the reads of a block that has not written yet can run
without one: a read-only block that gets one row sends exactly that SELECT (no BEGIN, no
COMMIT or ROLLBACK), and on SQLite a read-only block never takes the write lock. The driver
runs in autocommit mode; just before the first write of a transaction (a flush, a bulk
statement, `UPDATE`/`DELETE`, a `SELECT ... FOR UPDATE`, a SAVEPOINT, DDL, or any SQL text,
which cannot be told apart from a write) we send BEGIN ourselves, and the driver's `commit()`
and `rollback()` end that transaction (psycopg 3, sync or async, and sqlite3, under aiosqlite
too, send COMMIT/ROLLBACK whenever the server is in a transaction, autocommit or not, and
nothing otherwise).

asyncpg is driven through SQLAlchemy's adapter, which keeps its own transaction object: in
autocommit mode it never starts one, and its `commit()`/`rollback()` only end the one it
started, so a BEGIN sent by hand would never end. On asyncpg engines the dialect's
`do_commit`/`do_rollback` therefore send COMMIT/ROLLBACK themselves whenever asyncpg says the
connection is in a transaction (`is_in_transaction()`, known locally, no round trip), after
the adapter has ended any transaction of its own (a connection given another isolation level).
BEGIN, COMMIT and ROLLBACK go through asyncpg's simple query protocol: one round trip each,
where the adapter's cursor would first prepare them.

With sync psycopg (and libpq 14 or later), BEGIN does not cost a round trip of its own: it
goes out in one pipeline with the first write (psycopg's pipeline mode), so a block that
creates one row takes two round trips (BEGIN + INSERT, COMMIT) where SQLAlchemy's default
takes three.

Eager BEGIN (a transaction from the first statement) stays where reads must share a snapshot:
REPEATABLE READ and SERIALIZABLE, and when the user opts out (`lazy_begin=False`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection
from sqlalchemy.sql import Select, visitors
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import ColumnClause, TextClause
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.util import await_

from repositories._connection import BEGIN_STATEMENT, BEGUN, LAZY
from repositories._connection import begin_statement as read_only_or

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine, ExecutionContext

__all__ = [
    "Execute",
    "ExecuteCall",
    "around_each_execution",
    "install",
    "install_eager",
    "send",
    "supports_lazy_begin",
]

# The drivers whose commit() and rollback() end a transaction that was begun by hand while
# the connection is in autocommit mode (psycopg2, for one, would leave it open), or, for
# asyncpg, whose dialect we make end it (see the module's docstring).
_LAZY_DRIVERS = frozenset(
    {
        ("postgresql", "psycopg"),
        ("postgresql", "psycopg_async"),  # SQLAlchemy's other name for async psycopg
        ("postgresql", "asyncpg"),
        ("sqlite", "pysqlite"),
        ("sqlite", "aiosqlite"),
    }
)
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

    def must_begin(connection: Connection) -> bool:
        """For a statement that may write: whether BEGIN goes before it."""
        try:
            info = connection.info
        except NotImplementedError:
            return False  # the bare connection SQLAlchemy sets its dialect up on
        if info.get(BEGUN) or not connection.in_transaction():
            return False
        # AUTOCOMMIT wants no transaction; another level makes the driver begin.
        return "isolation_level" not in connection.get_execution_options()

    def around(execute: Execute, call: ExecuteCall) -> None:
        context = call.context
        connection = call.connection
        # A plain read, the common case, is answered first: it never begins the transaction,
        # whatever the connection's state.
        if (
            connection is None
            or _can_run_outside_a_transaction(connection, context)
            or not must_begin(connection)
        ):
            execute(call)
            return
        dbapi_connection: Any = connection.connection.dbapi_connection
        connection.info[BEGUN] = True
        begin = read_only_or(connection, begin_statement)
        if _pipelines(dbapi_connection, call.cursor):
            # BEGIN and the first write leave in one network round trip (psycopg's pipeline
            # mode): the write waits for no separate answer to BEGIN. Errors are raised at
            # the pipeline's end, inside the dialect's execute, as without it.
            with dbapi_connection.pipeline():
                dbapi_connection.execute(begin)
                execute(call)
            return
        send(dbapi_connection, begin)
        execute(call)

    event.listen(engine.pool, "connect", on_connect)
    around_each_execution(engine, around)
    if engine.dialect.driver == "asyncpg":
        _end_transactions_begun_by_hand(engine)
    # uow._transactions forgets BEGUN at each begin and rollback.


def _pipelines(dbapi_connection: Any, cursor: Any) -> bool:
    """Whether BEGIN can go in one pipeline with the statement: sync psycopg, on a client-side
    cursor (a server-side cursor's DECLARE cannot run in pipeline mode)."""
    return (
        type(cursor).__module__.startswith("psycopg")
        and type(cursor).__name__ == "Cursor"  # not ServerCursor, nor async psycopg's
        and not getattr(dbapi_connection, "_pipeline", None)  # already in one: no nesting
        and _pipeline_supported()
    )


@cache
def _pipeline_supported() -> bool:
    """Whether the libpq psycopg uses has pipeline mode (libpq 14 and later)."""
    from psycopg import Pipeline

    return bool(Pipeline.is_supported())


def send(dbapi_connection: Any, statement: str) -> None:
    """Send a transaction statement (BEGIN, COMMIT, ROLLBACK) on a DBAPI connection.

    On the connection, not a statement's cursor: that may be a server-side cursor, which would
    wrap the statement in DECLARE. For asyncpg and aiosqlite (behind SQLAlchemy's adapters)
    through the driver connection, in one call, its errors translated as the adapter's cursor
    translates them (SQLAlchemy then recognises a lost connection).
    """
    if not isinstance(dbapi_connection, _DIRECT_ADAPTERS):
        dbapi_connection.execute(statement)
        return
    try:
        await_(dbapi_connection.driver_connection.execute(statement))
    except Exception as error:
        dbapi_connection._handle_exception(error)


# Adapters whose driver connection runs a statement in one call: asyncpg's simple query
# protocol (one round trip, no prepare), aiosqlite's execute (one trip through its worker
# thread, where the adapter's execute takes two: a cursor, then the statement).
_DIRECT_ADAPTERS = (AsyncAdapt_asyncpg_connection, AsyncAdapt_aiosqlite_connection)


def _end_transactions_begun_by_hand(engine: Engine) -> None:
    """Make an asyncpg engine's COMMIT and ROLLBACK end the transactions BEGIN began by hand.

    SQLAlchemy's asyncpg adapter ends only a transaction it started itself, which it never does
    in autocommit mode. After it has had its turn, whatever transaction asyncpg still reports
    is one we began: COMMIT or ROLLBACK is sent for it. A closed connection has none to end.
    """
    dialect: Any = engine.dialect  # one per engine: create_engine makes a new one

    def ending(end: Callable[[Any], None], statement: str) -> Callable[[Any], None]:
        def end_by_hand_too(pooled: Any) -> None:
            end(pooled)
            adapter = getattr(pooled, "dbapi_connection", pooled)  # the pool's proxy, or bare
            driver = adapter.driver_connection
            if not driver.is_closed() and driver.is_in_transaction():
                send(adapter, statement)

        return end_by_hand_too

    dialect.do_commit = ending(dialect.do_commit, "COMMIT")
    dialect.do_rollback = ending(dialect.do_rollback, "ROLLBACK")


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to make, per statement
class ExecuteCall:
    """One call of a dialect's `do_execute`, `do_executemany` or `do_execute_no_params`."""

    cursor: Any
    statement: str
    args: tuple[Any, ...]  # (parameters, context) or (context,)

    @property
    def context(self) -> ExecutionContext | None:
        context: ExecutionContext | None = self.args[-1] if self.args else None
        return context

    @property
    def parameters(self) -> Any:
        return self.args[0] if len(self.args) > 1 else None

    @property
    def connection(self) -> Connection | None:
        """The SQLAlchemy connection running the statement (None outside one)."""
        return getattr(self.context, "root_connection", None)


Execute = Callable[[ExecuteCall], None]


def around_each_execution(engine: Engine, around: Callable[[Execute, ExecuteCall], None]) -> None:
    """Run each statement `engine` sends through `around(execute, call)`.

    Through the dialect's `do_execute` methods, not a `before_cursor_execute` listener: an
    engine with any execution listener takes SQLAlchemy's slower path for every statement
    (about a tenth of a primary-key read on SQLite).
    """
    dialect: Any = engine.dialect  # one per engine: create_engine makes a new one
    for name in ("do_execute", "do_executemany", "do_execute_no_params"):
        setattr(dialect, name, _wrapped(getattr(dialect, name), around))


def _wrapped(
    method: Callable[..., None], around: Callable[[Execute, ExecuteCall], None]
) -> Callable[..., None]:
    def execute(call: ExecuteCall) -> None:
        method(call.cursor, call.statement, *call.args)

    def wrapped(cursor: Any, statement: str, *args: Any) -> None:
        around(execute, ExecuteCall(cursor, statement, args))

    return wrapped


def install_eager(engine: Engine, begin_statement: str) -> None:
    """Send `begin_statement` when each transaction begins (for a driver that sends no BEGIN of
    its own, as pysqlite once told to stay out of transactions)."""

    dialect: Any = engine.dialect  # one per engine: create_engine makes a new one
    begin = dialect.do_begin

    def begin_with_statement(dbapi_connection: Any) -> None:
        begin(dbapi_connection)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(begin_statement)
        finally:
            cursor.close()

    # A dialect method, not a "begin" listener: see before_each_execution.
    dialect.do_begin = begin_with_statement


def _can_run_outside_a_transaction(
    connection: Connection, context: ExecutionContext | None
) -> bool:
    """Whether a statement may run before BEGIN: a plain read, where reads need no snapshot."""
    if context is None:
        return False  # exec_driver_sql: SQL text, which may write
    compiled = context.compiled
    if compiled is None:
        return False
    dialect = connection.dialect
    if dialect.name != "sqlite":
        # The server's default (default_transaction_isolation) takes snapshots: eager. (SQLite
        # reports SERIALIZABLE, which its locking gives every transaction anyway.) Not known
        # yet while SQLAlchemy sets the dialect up, at the first connect.
        if getattr(dialect, "default_isolation_level", None) in _SNAPSHOT_LEVELS:
            return False
        # A server-side cursor (iterator() on PostgreSQL) needs a transaction; SQLite streams
        # without one.
        if context.execution_options.get("stream_results"):
            return False
    # Compiled statements are cached by SQLAlchemy, so each is looked at once: the verdict is
    # kept on the compiled object (an attribute is cheaper to read than a weak mapping).
    kept: dict[str, Any] = compiled.__dict__
    verdict: bool | None = kept.get(_VERDICT)
    if verdict is None:
        verdict = kept[_VERDICT] = _is_plain_read(compiled.statement)
    return verdict


_VERDICT = "_uow_plain_read"

# Functions that read and compute, nothing more: a SELECT calling anything else may write
# (`SELECT my_function()`) or set transaction state (`set_config(..., true)`,
# `pg_advisory_xact_lock`), which outside a transaction would commit or vanish at once.
_PURE_FUNCTIONS = frozenset(
    {
        "abs", "avg", "coalesce", "concat", "count", "current_date", "current_time",
        "current_timestamp", "date", "datetime", "instr", "length", "localtime",
        "localtimestamp", "lower", "ltrim", "max", "min", "now", "nullif", "round", "rtrim",
        "substr", "substring", "sum", "trim", "upper",
    }
)  # fmt: skip


def _is_plain_read(statement: Any) -> bool:
    """A SELECT that only reads: no FOR UPDATE/SHARE, no data-modifying CTE, no SQL text, and
    only functions known to compute without side effects."""
    if not isinstance(statement, Select) or statement._for_update_arg is not None:
        return False  # _for_update_arg: not public, where a SELECT keeps FOR UPDATE / SHARE
    for element in visitors.iterate(statement):
        if isinstance(element, UpdateBase | TextClause):
            return False  # INSERT/UPDATE/DELETE in a CTE; SQL text
        if isinstance(element, ColumnClause) and element.is_literal and element.name != "*":
            return False  # literal_column("..."): SQL text too (count(*)'s "*" excepted)
        if isinstance(element, FunctionElement) and element.name.lower() not in _PURE_FUNCTIONS:
            return False
    return True
