"""Telling a unique violation apart from other integrity errors, across drivers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint, inspect
from sqlalchemy.exc import IntegrityError

from repositories._fields import fields_of, mapper_of

if TYPE_CHECKING:
    from collections.abc import Mapping

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


def insertable_with_on_conflict(model: type[Any], values: Mapping[str, Any]) -> bool:
    """Whether a new row of `model` made of `values` can go in with `INSERT ... ON CONFLICT`,
    as one statement on one table. Not: a model spread over several tables (joined
    inheritance) or one with a discriminator column; a table with a DEFERRABLE unique
    constraint (PostgreSQL refuses it as a conflict arbiter); values holding a collection or a
    related object with no key yet, which only a flush (its cascades) can save."""
    mapper = mapper_of(model)
    if len(mapper.tables) > 1 or mapper.polymorphic_on is not None:
        return False
    if any(
        isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint) and constraint.deferrable
        for table in mapper.tables
        for constraint in getattr(table, "constraints", ())
    ):
        return False
    relationships = fields_of(model).relationships
    for name, value in values.items():
        relationship = relationships.get(name)
        if relationship is None or value is None:
            continue
        if relationship.uselist or inspect(value).identity is None:
            return False
    return True


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
