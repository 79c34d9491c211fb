"""The multi-row INSERT path of `bulk_create`, and the chunking of `in_bulk`."""

from __future__ import annotations

from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Index, PrimaryKeyConstraint, UniqueConstraint, inspect
from sqlalchemy import insert as generic_insert
from sqlalchemy.dialects import postgresql, sqlite

from repositories._connection import protected_write
from repositories._fields import check_columns, fields_of
from repositories._links import Link, links_of
from repositories.errors import FieldError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from sqlalchemy.orm import Session

T = TypeVar("T")


def chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`values` in consecutive slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def rows_of(model: type[Any], items: Iterable[Any]) -> tuple[list[dict[str, Any]], list[Link]]:
    """Column-value dicts from dicts, pydantic models or instances of `model`, all validated,
    and the many-to-ones set on the instances (their foreign keys are filled in later).

    Each distinct set of keys is checked once: a 100k-row load usually has one.
    """
    mapper = inspect(model)
    columns = fields_of(model).columns
    checked: set[frozenset[str]] = set()
    rows: list[dict[str, Any]] = []
    links: list[Link] = []
    for item in items:
        if isinstance(item, dict):
            row = item
        elif isinstance(item, BaseModel):
            row = item.model_dump(exclude_unset=True)
        elif isinstance(item, model):
            state = item.__dict__
            row = {name: state[name] for name in columns if name in state}
            links.extend(links_of(mapper, item, row))
        else:
            raise TypeError(
                f"bulk_create takes dicts, pydantic models or {model.__name__} objects, "
                f"not {type(item).__name__}"
            )
        keys = frozenset(row)
        if keys not in checked:
            check_columns(model, keys, why=" (bulk_create takes column values)")
            checked.add(keys)
        rows.append(row)
    return rows, links


def unique_column(model: type[Any], field_name: str) -> ColumnElement[Any]:
    """The column behind `field_name`, which must be the primary key or unique on its own.

    A unique index with a condition (a partial index, `postgresql_where=...`) does not count:
    rows outside the condition may share a value, and a `{value: object}` dict would keep one.
    """
    check_columns(model, [field_name])
    columns = fields_of(model).columns
    column = columns[field_name].columns[0]
    table = column.table
    unique_alone = column.unique or any(
        isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint)
        and list(constraint.columns) == [column]
        for constraint in getattr(table, "constraints", ())
    )
    indexes = [
        index
        for index in getattr(table, "indexes", ())
        if index.unique and list(index.columns) == [column]
    ]
    partial = [index for index in indexes if _has_condition(index)]
    if not unique_alone and len(partial) == len(indexes):
        where = f"; {model.__name__}.{field_name} is"
        if partial:
            names = ", ".join(repr(index.name) for index in partial)
            raise FieldError(
                f"in_bulk needs a field that is unique on its own{where} unique only under a "
                f"condition (partial index {names}), so rows outside it may share a value and "
                "all but one of them would be left out; use a field with an unconditional "
                "unique constraint or index"
            )
        raise FieldError(f"in_bulk needs a unique field{where} not unique")
    attribute: ColumnElement[Any] = getattr(model, field_name)
    return attribute


def _has_condition(index: Index) -> bool:
    # Any dialect's condition counts (`postgresql_where`, `sqlite_where`, `mssql_where`): the
    # model says the values may repeat, whichever database this session happens to use.
    return any(
        key.endswith("_where") and value is not None for key, value in index.dialect_kwargs.items()
    )


def _ascending_key(model: type[Any], rows: list[dict[str, Any]]) -> str | None:
    """The attribute of `model`'s single integer primary key, if no row sets it."""
    mapper = inspect(model)
    if len(mapper.primary_key) != 1:
        return None
    column = mapper.primary_key[0]
    try:
        if column.type.python_type is not int:
            return None
    except NotImplementedError:
        return None
    name = mapper.get_property_by_column(column).key
    return None if any(name in row for row in rows) else name


def insert_rows(
    session: Session,
    model: type[T],
    rows: list[dict[str, Any]],
    batch_size: int | None,
    ignore_conflicts: bool,
    return_objects: bool = True,
) -> list[T]:
    """INSERT `rows` as multi-row statements; the new objects in input order (or none).

    All or nothing: a failing batch takes the ones before it back out, and the caller's
    transaction stays usable (on PostgreSQL a failed statement would otherwise abort all of
    it): the batches run inside one SAVEPOINT, or, when they are the transaction's first write,
    inside the transaction lazy BEGIN opens for them (see `protected_write`). The session must
    have been flushed.
    """
    bind = session.get_bind(mapper=inspect(model))
    statement = _insert_statement(model, bind.dialect.name, ignore_conflicts)
    created: list[T] = []
    try:
        with protected_write(session, model):
            if not return_objects:
                _execute_many(session, model, statement, rows, batch_size)
            else:
                for objects in _insert_batches(session, model, statement, rows, batch_size):
                    created.extend(objects)
    except BaseException:
        # Rolling back leaves the objects the earlier batches loaded in the identity map,
        # standing for rows that no longer exist; SQLite would even hand their keys to the
        # next rows inserted, and the session would mistake those for them.
        for obj in created:
            if obj in session:
                session.expunge(obj)
        raise
    return created


def _insert_statement(model: type[Any], dialect: str, ignore_conflicts: bool) -> Any:
    if not ignore_conflicts:
        return generic_insert(model)
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing()
    raise NotImplementedError(
        f"bulk_create(ignore_conflicts=True) supports PostgreSQL and SQLite, not {dialect}"
    )


def _execute_many(
    session: Session,
    model: type[Any],
    statement: Any,
    rows: list[dict[str, Any]],
    batch_size: int | None,
) -> None:
    """A Core executemany on the connection, with attribute names turned into column keys:
    the driver's fastest path, and no ORM objects to build."""
    keys = {name: prop.columns[0].key for name, prop in fields_of(model).columns.items()}
    if any(name != key for name, key in keys.items()):
        rows = [{keys[name]: value for name, value in row.items()} for row in rows]
    connection = session.connection(bind_arguments={"mapper": inspect(model)})
    for batch in chunks(rows, batch_size or len(rows)):
        # Core compiles one INSERT from the first row's keys: rows with other keys would
        # lose their extra values or fail, so each run of rows with one key set goes alone.
        for _, run in groupby(batch, key=frozenset):
            connection.execute(statement, list(run))


def _insert_batches(
    session: Session,
    model: type[T],
    statement: Any,
    rows: list[dict[str, Any]],
    batch_size: int | None,
) -> Iterator[Sequence[T]]:
    """INSERT each batch through the ORM; the objects of each, in input order."""
    dialect = session.get_bind(mapper=inspect(model)).dialect
    returning = dialect.insert_executemany_returning_sort_by_parameter_order
    ascending = _ascending_key(model, rows) if dialect.name == "sqlite" else None
    for batch in chunks(rows, batch_size or len(rows)):
        if returning and ascending:
            # SQLAlchemy sends SQLite one INSERT per row when asked for RETURNING in parameter
            # order. Unordered, it sends multi-row INSERTs; SQLite gives the rows of one INSERT
            # ascending integer keys in VALUES order (batches run in order), so sorting by the
            # key restores the input order.
            result = session.scalars(statement.returning(model), list(batch)).all()
            yield sorted(result, key=attrgetter(ascending))
        elif returning:
            # "insertmanyvalues": multi-row INSERT ... RETURNING, rows back in parameter order.
            yield session.scalars(
                statement.returning(model, sort_by_parameter_order=True), list(batch)
            ).all()
        else:
            session.execute(statement, list(batch))
            yield [model(**row) for row in batch]
