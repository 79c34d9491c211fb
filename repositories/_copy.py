"""`bulk_create(return_objects=False)` on PostgreSQL (psycopg 3): rows sent through COPY.

COPY sends values, never SQL, so it stands in for an INSERT only where the INSERT would send
values too; Python defaults are computed here, as SQLAlchemy's INSERT computes them. It runs
through the driver connection, which SQLAlchemy's events do not see: the lazy BEGIN those
events send (see `repositories._connection`) is sent here first.

Async psycopg (an AsyncDatabase's `postgresql+psycopg://`) copies too: the same rows, through
its async cursor, awaited in SQLAlchemy's greenlet bridge. asyncpg keeps the INSERT path
(`executemany`, which asyncpg pipelines): its own COPY (`copy_records_to_table`) encodes
values with its binary codecs, not the bind processing an INSERT applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, bindparam, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import await_

from repositories._connection import BEGUN, FAILED, LAZY, begin_statement, has_written
from repositories._fields import fields_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from sqlalchemy.engine import Connection, Dialect

__all__ = ["CopyColumn", "copy_columns", "copy_run"]


@dataclass(frozen=True, slots=True)
class CopyColumn:
    attribute: str
    key: str  # how a default's context names it (the column's key)
    name: str  # the column's name, quoted for SQL
    default: Any  # the column's ColumnDefault (a value or a Python function), or None
    process: Callable[[Any], Any] | None  # the type's bind processor, as an INSERT applies it


def copy_columns(model: type[Any], dialect: Dialect) -> list[CopyColumn] | None:
    """The columns COPY writes for `model`, or None where it cannot stand in for an INSERT.

    COPY sends values, never SQL: a column whose default or bind expression is SQL
    (`default=func.now()`, a `Sequence`, a type wrapping its value in a function) keeps the
    INSERT path, as do models on several tables and drivers other than psycopg 3 (sync or
    async).
    Python defaults (`default=0`, `default=uuid4`, a function of the context) are computed
    for each row that leaves the column out, as SQLAlchemy's INSERT computes them.
    """
    if (dialect.name, dialect.driver) != ("postgresql", "psycopg"):
        return None
    mapper = inspect(model)
    if len(mapper.tables) != 1:
        return None
    quote = dialect.identifier_preparer.quote
    columns = []
    for attribute, prop in fields_of(model).columns.items():
        column = prop.columns[0]
        if not isinstance(column, Column) or column.table is not mapper.local_table:
            continue  # not a column of the table (a column_property of an expression)
        default = column.default
        if default is not None and not (default.is_scalar or default.is_callable):
            return None
        type_ = column.type.dialect_impl(dialect)
        if type_.bind_expression(bindparam(column.key, type_=type_)) is not None:
            return None
        process = type_.bind_processor(dialect)
        columns.append(CopyColumn(attribute, column.key, quote(column.name), default, process))
    return columns


def copy_run(
    connection: Connection,
    model: type[Any],
    columns: list[CopyColumn],
    keys: frozenset[str],
    rows: list[Any],
) -> None:
    """One COPY of `rows`, which all have the keys `keys` (attributes of `columns`)."""
    table = connection.dialect.identifier_preparer.format_table(inspect(model).local_table)
    # A column a row leaves out is left out of the COPY too (so the server applies its own
    # default), unless SQLAlchemy would have computed a default for it.
    written = [c for c in columns if c.attribute in keys or c.default is not None]
    names = ", ".join(column.name for column in written)
    values = _copy_values(connection, written, keys, rows)
    _copy_rows(connection, f"COPY {table} ({names}) FROM STDIN", values)


def _copy_values(
    connection: Connection, columns: list[CopyColumn], keys: frozenset[str], rows: list[Any]
) -> list[tuple[Any, ...]]:
    """The rows as tuples in `columns` order: defaults computed, values processed.

    Computed before COPY starts, so a default function may use `context.connection`.
    """
    defaulted = [column for column in columns if column.attribute not in keys]
    if not defaulted and not any(column.process for column in columns):
        get = itemgetter(*(column.attribute for column in columns))
        return [get(row) for row in rows] if len(columns) > 1 else [(get(row),) for row in rows]
    given = [column for column in columns if column.attribute in keys]
    tuples = []
    for row in rows:
        values = {column.key: row[column.attribute] for column in given}
        for column in defaulted:
            default = column.default
            values[column.key] = (
                default.arg(_DefaultContext(connection, values))
                if default.is_callable
                else default.arg
            )
        tuples.append(
            tuple(
                column.process(values[column.key]) if column.process else values[column.key]
                for column in columns
            )
        )
    return tuples


@dataclass(frozen=True, slots=True)
class _DefaultContext:
    """What a Python default function taking a context (`default=fn(context)`) may use of
    SQLAlchemy's execution context: the row's values so far, and the connection."""

    connection: Connection
    current_parameters: dict[str, Any]

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self.current_parameters


def _copy_rows(connection: Connection, statement: str, rows: Iterable[Sequence[Any]]) -> None:
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
        if dialect.is_async:  # SQLAlchemy's adapter of psycopg's AsyncConnection
            await_(_copy_rows_async(dbapi_connection.driver_connection, statement, rows))
        else:
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


async def _copy_rows_async(
    driver_connection: Any, statement: str, rows: Iterable[Sequence[Any]]
) -> None:
    """What `_copy_rows` does on a sync psycopg connection, on an async one."""
    async with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            await copy.write_row(row)


def _begin_on_server(connection: Connection) -> None:
    info = connection.info
    if not info.get(LAZY, False) or info.get(BEGUN, False) or not connection.in_transaction():
        return  # eager BEGIN (the driver begins by itself), already begun, or autocommit
    # The same statement, sent the same way, as uow._begin's hook before a statement it sees.
    connection.connection.dbapi_connection.execute(begin_statement(connection))  # type: ignore[union-attr]
    info[BEGUN] = True
