"""The multi-row INSERT path of `bulk_create`, and the chunking of `in_bulk`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, PrimaryKeyConstraint, UniqueConstraint, inspect
from sqlalchemy import insert as generic_insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import ColumnProperty

from uow.errors import FieldError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sqlalchemy.orm import Session

T = TypeVar("T")

# Bound parameters one statement may carry: SQLite builds before 3.32 allow 999; PostgreSQL's
# protocol allows 65535. Stay below both with room for the rest of the statement.
_PARAMETER_LIMITS = {"sqlite": 900, "postgresql": 30000}
_DEFAULT_PARAMETER_LIMIT = 900


def parameter_limit(dialect: str) -> int:
    """How many values one `IN (...)` may hold on this dialect."""
    return _PARAMETER_LIMITS.get(dialect, _DEFAULT_PARAMETER_LIMIT)


def chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`values` in consecutive slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _columns(model: type[Any]) -> dict[str, ColumnProperty[Any]]:
    return {p.key: p for p in inspect(model).attrs if isinstance(p, ColumnProperty)}


def column_values(model: type[Any], values: dict[str, Any]) -> dict[str, Any]:
    """Check that every key of `values` is a column attribute of `model` (bulk inserts take no
    relationships) and return `values`."""
    columns = _columns(model)
    for name in values:
        if name not in columns:
            raise FieldError(
                f"{model.__name__} has no column {name!r} (bulk_create takes column values); "
                f"valid columns: {', '.join(sorted(columns))}"
            )
    return values


def instance_values(obj: Any) -> dict[str, Any]:
    """The column values set on a (transient) model instance."""
    state = obj.__dict__
    return {name: state[name] for name in _columns(type(obj)) if name in state}


def unique_column(model: type[Any], field_name: str) -> ColumnElement[Any]:
    """The column behind `field_name`, which must be the primary key or unique on its own."""
    columns = _columns(model)
    if field_name not in columns:
        raise FieldError(
            f"{model.__name__} has no column {field_name!r}; "
            f"valid columns: {', '.join(sorted(columns))}"
        )
    column = columns[field_name].columns[0]
    table = column.table
    unique_alone = column.unique or any(
        isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint)
        and list(constraint.columns) == [column]
        for constraint in getattr(table, "constraints", ())
    )
    unique_alone = unique_alone or any(
        index.unique and list(index.columns) == [column] for index in getattr(table, "indexes", ())
    )
    if not unique_alone:
        raise FieldError(
            f"in_bulk needs a unique field; {model.__name__}.{field_name} is not unique"
        )
    attribute: ColumnElement[Any] = getattr(model, field_name)
    return attribute


def insert_rows(
    session: Session,
    model: type[T],
    rows: list[dict[str, Any]],
    dialect: str,
    batch_size: int | None,
    ignore_conflicts: bool,
) -> list[T]:
    """INSERT `rows` as multi-row statements; the new objects in input order."""
    if ignore_conflicts:
        if dialect == "postgresql":
            statement: Any = postgresql.insert(model).on_conflict_do_nothing()
        elif dialect == "sqlite":
            statement = sqlite.insert(model).on_conflict_do_nothing()
        else:
            raise NotImplementedError(
                f"bulk_create(ignore_conflicts=True) supports PostgreSQL and SQLite, not {dialect}"
            )
    else:
        statement = generic_insert(model)
    bind = session.get_bind(mapper=inspect(model))
    returning = bind.dialect.insert_executemany_returning_sort_by_parameter_order
    created: list[T] = []
    for batch in chunks(rows, batch_size or len(rows)):
        if returning:
            # One executemany: SQLAlchemy's "insertmanyvalues" sends multi-row INSERT ...
            # RETURNING statements and puts the rows back in parameter order.
            result = session.scalars(
                statement.returning(model, sort_by_parameter_order=True), list(batch)
            )
            created.extend(result.all())
        else:
            session.execute(statement, list(batch))
            created.extend(model(**row) for row in batch)
    return created
