"""Telling a unique violation apart from other integrity errors, across drivers."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

# SQLSTATE 23505 is unique_violation (PostgreSQL; psycopg 3 says `sqlstate`, psycopg2 `pgcode`).
_UNIQUE_SQLSTATE = "23505"
# Extended result codes SQLITE_CONSTRAINT_UNIQUE and SQLITE_CONSTRAINT_PRIMARYKEY.
_SQLITE_UNIQUE_CODES = frozenset({2067, 1555})
# MySQL / MariaDB ER_DUP_ENTRY.
_MYSQL_DUP_ENTRY = 1062


class UniqueConflict(Exception):
    """The driver error `conflict_error` stands in for: a unique violation, by its SQLSTATE."""

    sqlstate = _UNIQUE_SQLSTATE


def conflict_error(model: type[Any]) -> IntegrityError:
    """The `IntegrityError` for an `INSERT ... ON CONFLICT DO NOTHING` that inserted no row,
    when no row matching the lookups can be read: the new row conflicted with another unique
    field, or the winner's row is invisible to this transaction (REPEATABLE READ)."""
    message = (
        f"the new {model.__name__} row conflicts with an existing row on a unique constraint, "
        "and no row matching the lookups is visible (the conflict is on another unique "
        "field, or the row was inserted by a transaction this one cannot see)"
    )
    return IntegrityError(
        f"INSERT INTO {model.__name__} ... ON CONFLICT DO NOTHING", None, UniqueConflict(message)
    )


def is_unique_violation(error: IntegrityError) -> bool:
    """True when `error` says a UNIQUE or PRIMARY KEY constraint refused the row."""
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return bool(sqlstate == _UNIQUE_SQLSTATE)
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code in _SQLITE_UNIQUE_CODES
    args = getattr(orig, "args", ())
    if args and args[0] == _MYSQL_DUP_ENTRY:
        return True
    message = str(orig)
    return "UNIQUE constraint failed" in message or "duplicate key" in message
