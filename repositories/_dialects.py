"""What the library needs to know about each database: one answer per question.

Every module that asks a database question (which dialect, how many bound parameters, how wide
an integer, what SQLite needs, whether an error aborts the transaction) asks here. `uow` asks
here too: it depends on `repositories`, never the reverse.
"""

from __future__ import annotations

import sqlite3
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Integer, SmallInteger, inspect
from sqlalchemy.dialects import postgresql

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.orm import Session

__all__ = [
    "BIGINT_MAX",
    "BIGINT_MIN",
    "SQLITE_BUSY_TIMEOUT",
    "aborts_transaction_on_error",
    "dialect_name",
    "has_on_conflict",
    "int_bounds",
    "parameter_limit",
]

# SQL's BIGINT, the widest integer any supported database stores, and the type of LIMIT and
# OFFSET: the largest row position a query can name.
BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1

# Seconds a SQLite connection waits for another writer's lock before "database is locked".
SQLITE_BUSY_TIMEOUT = 30.0

# PostgreSQL's integer types by width (subclasses of Integer first: BigInteger is an Integer).
_INT_BITS = ((BigInteger, 63), (SmallInteger, 15), (Integer, 31))

# The room left in a statement for what is not an IN list's values.
_STATEMENT_ROOM = 500


def dialect_name(session: Session, model: type[Any]) -> str:
    """The name of the database `model`'s rows live in: "sqlite", "postgresql"..."""
    return session.get_bind(mapper=inspect(model)).dialect.name


@cache
def parameter_limit(dialect: str) -> int:
    """How many values one statement may bind for an `IN (...)` list on `dialect`.

    SQLite: what this build of the library allows (32,766 by default since 3.32). PostgreSQL:
    32,767, asyncpg's limit (psycopg's is 65,535, the protocol's 16-bit count): one limit for
    every driver, so code that works on one works on all, sync and async. Room is left for the
    rest of the statement. Asked on first use, not at import (SQLite's answer needs a
    connection).
    """
    if dialect == "postgresql":
        return 32_767 - _STATEMENT_ROOM
    if dialect == "sqlite":
        connection = sqlite3.connect(":memory:")
        try:
            return int(connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)) - _STATEMENT_ROOM
        finally:
            connection.close()
    return 999 - _STATEMENT_ROOM  # the lowest limit in common use (old SQLite, some drivers)


def has_on_conflict(dialect: str) -> bool:
    """Whether `INSERT ... ON CONFLICT DO NOTHING RETURNING` works (PostgreSQL; SQLite 3.35+)."""
    if dialect == "sqlite":
        return sqlite3.sqlite_version_info >= (3, 35)
    return dialect == "postgresql"


def aborts_transaction_on_error(dialect: str) -> bool:
    """Whether a failed statement aborts the whole transaction until it is rolled back.

    PostgreSQL does; SQLite undoes only the failed statement.
    """
    return dialect == "postgresql"


@cache
def _postgresql() -> Dialect:
    dialect: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return dialect


def int_bounds(column_type: Any, dialect: str) -> tuple[int, int] | None:
    """The integers a column of `column_type` holds where the database refuses wider ones.

    PostgreSQL refuses to compare an integer column with a number wider than its type (and the
    error aborts the transaction); SQLite stores any 64-bit integer in any INTEGER column, so
    there (and for types that convert values themselves) the answer is None.
    """
    if not isinstance(column_type, Integer) or dialect != "postgresql":
        return None
    column_type = column_type.dialect_impl(_postgresql())  # with_variant(BigInteger(), ...)
    for type_, bits in _INT_BITS:
        if isinstance(column_type, type_):
            return -(2**bits), 2**bits - 1
    return None
