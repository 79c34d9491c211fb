"""Telling a unique violation apart from other integrity errors, across drivers."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.exc import IntegrityError

# SQLSTATE 23505 is unique_violation (PostgreSQL; psycopg 3 says `sqlstate`, psycopg2 `pgcode`).
_UNIQUE_SQLSTATE = "23505"
# Extended result codes SQLITE_CONSTRAINT_UNIQUE and SQLITE_CONSTRAINT_PRIMARYKEY.
_SQLITE_UNIQUE_CODES = frozenset({2067, 1555})
# MySQL / MariaDB ER_DUP_ENTRY.
_MYSQL_DUP_ENTRY = 1062


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
