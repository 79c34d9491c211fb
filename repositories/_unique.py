"""Which column sets a model keeps unique, and the checks built on them: `in_bulk`'s field and
the conflict target of `bulk_create(update_conflicts=True)`.

Only an unconditional unique set counts: the primary key, a unique constraint or a unique index
without a condition. Rows outside a partial index's condition may share values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, ColumnElement, Index, PrimaryKeyConstraint, UniqueConstraint, inspect

from repositories._fields import check_columns, fields_of
from repositories.errors import FieldError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["check_conflict_target", "unique_column"]


def unique_column(model: type[Any], field_name: str) -> ColumnElement[Any]:
    """The column behind `field_name`, which must be the primary key or unique on its own.

    A unique index with a condition (a partial index, `postgresql_where=...`) does not count:
    rows outside the condition may share a value, and a `{value: object}` dict would keep one.
    """
    check_columns(model, [field_name])
    column = fields_of(model).columns[field_name].columns[0]
    unique, partial = _unique_sets(column.table, plain_columns=False)
    alone = frozenset([column])
    if alone not in unique:
        where = f"; {model.__name__}.{field_name} is"
        conditional = [index for columns, index in partial if columns == alone]
        if conditional:
            raise FieldError(
                f"in_bulk needs a field that is unique on its own{where} unique only under a "
                f"condition (partial index {_names(conditional)}), so rows outside it may share "
                "a value and all but one of them would be left out; use a field with an "
                "unconditional unique constraint or index"
            )
        raise FieldError(f"in_bulk needs a unique field{where} not unique")
    attribute: ColumnElement[Any] = getattr(model, field_name)
    return attribute


def check_conflict_target(model: type[Any], names: tuple[str, ...]) -> None:
    """Refuse `names` unless their columns are exactly an unconditional unique set: ON CONFLICT
    (columns) needs one to decide what a conflict is (a partial index needs its condition)."""
    mapper = inspect(model)
    target = frozenset(fields_of(model).columns[name].columns[0] for name in names)
    unique, partial = _unique_sets(next(iter(target)).table, plain_columns=True)
    if target in unique:
        return
    given = f"({', '.join(names)})"
    why = f"{given} is not"
    conditional = [index for columns, index in partial if columns == target]
    if conditional:
        why = f"{given} is unique only under a condition (partial index {_names(conditional)})"
    choices = sorted(
        "(" + ", ".join(sorted(mapper.get_property_by_column(c).key for c in columns)) + ")"
        for columns in set(unique)
    )
    raise FieldError(
        "bulk_create(update_conflicts=True) needs unique_fields that are together the primary "
        f"key, a unique constraint or an unconditional unique index of {model.__name__}; "
        f"{why}. Unique fields: {', '.join(choices) or 'none'}"
    )


def _unique_sets(
    table: Any, *, plain_columns: bool
) -> tuple[list[frozenset[Any]], list[tuple[frozenset[Any], Index]]]:
    """The column sets `table` keeps unique unconditionally (primary key, unique constraints
    and indexes), and those unique only under a partial index's condition.

    With `plain_columns`, an index on an expression (`lower(email)`) is left out: ON CONFLICT
    can only name plain columns.
    """
    unique = [frozenset([column]) for column in getattr(table, "columns", ()) if column.unique]
    unique += [
        frozenset(constraint.columns)
        for constraint in getattr(table, "constraints", ())
        if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint)
    ]
    partial: list[tuple[frozenset[Any], Index]] = []
    for index in getattr(table, "indexes", ()):
        if not index.unique or (
            plain_columns and not all(isinstance(e, Column) for e in index.expressions)
        ):
            continue
        columns = frozenset(index.columns)
        if _has_condition(index):
            partial.append((columns, index))
        else:
            unique.append(columns)
    return unique, partial


def _has_condition(index: Index) -> bool:
    # Any dialect's condition counts (`postgresql_where`, `sqlite_where`, `mssql_where`): the
    # model says the values may repeat, whichever database this session happens to use.
    return any(
        key.endswith("_where") and value is not None for key, value in index.dialect_kwargs.items()
    )


def _names(indexes: Iterable[Index]) -> str:
    return ", ".join(repr(index.name) for index in indexes)
