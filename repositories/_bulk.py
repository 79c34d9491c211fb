"""`bulk_create`'s rows and the statements that write them: rows validated (`rows_of`), the
batches (`chunks`), and `insert_rows`, which picks the path: multi-row INSERT ... RETURNING,
the upsert (`repositories._upsert`), Core `executemany`, or COPY (`repositories._copy`).
"""

from __future__ import annotations

from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar
from weakref import WeakKeyDictionary

from pydantic import BaseModel
from sqlalchemy import insert as generic_insert
from sqlalchemy import inspect
from sqlalchemy.dialects import postgresql, sqlite

from repositories._connection import protected_write
from repositories._copy import copy_columns, copy_run
from repositories._fields import check_columns, fields_of
from repositories._links import Link, links_of
from repositories._streaming import plain_inserter
from repositories._upsert import SendOrder, on_conflict_do_update

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from sqlalchemy.orm import Session

    from repositories._copy import CopyColumn
    from repositories._upsert import Upsert

__all__ = ["chunks", "insert_rows", "rows_of"]

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
    *,
    upsert: Upsert | None = None,
) -> list[T]:
    """INSERT `rows` as multi-row statements; the new objects in input order (or none).

    With `upsert`, the rows that conflict update the existing ones, and the objects of both
    come back (objects the session already held are refreshed). Without objects to return and
    without conflict handling, PostgreSQL (psycopg 3) gets the rows through COPY.

    All or nothing: a failing batch takes the ones before it back out, and the caller's
    transaction stays usable (on PostgreSQL a failed statement would otherwise abort all of
    it): the batches run inside one SAVEPOINT, or, when they are the transaction's first write,
    inside the transaction lazy BEGIN opens for them (see `protected_write`). The session must
    have been flushed.

    Raises:
        ValueError: with `upsert`, two rows have the same unique values (before any SQL).
    """
    dialect = session.get_bind(mapper=inspect(model)).dialect
    statement = _insert_statement(model, dialect.name, ignore_conflicts, upsert)
    order = SendOrder.of(rows, upsert) if upsert else None
    sent = [rows[i] for i in order.order] if order else rows
    plain = not (return_objects or ignore_conflicts or upsert)
    copying = copy_columns(model, dialect) if plain else None
    # An upsert returns objects the session held before: a failure must not evict those.
    held = set(session.identity_map.keys()) if upsert and return_objects else set()
    returned: list[T] = []
    try:
        with protected_write(session, model):
            if copying:
                _copy_many(session, model, copying, sent, batch_size)
            elif not return_objects:
                _execute_many(session, model, statement, sent, batch_size)
            else:
                batches = _upsert_batches if upsert else _insert_batches
                for objects in batches(session, model, statement, sent, batch_size):
                    returned.extend(objects)
    except BaseException:
        _forget(session, returned, held)
        raise
    return order.in_input_order(returned) if order and returned else returned


def _forget(session: Session, objects: list[Any], held: set[Any]) -> None:
    """Take the objects of rolled-back rows out of the session (or expire the ones it held
    before, refreshed with values that are gone)."""
    for obj in objects:
        if obj not in session:
            continue
        # Left in the identity map, an object would stand for a row that no longer exists
        # (SQLite would even hand its key to the next row inserted).
        if inspect(obj).identity_key in held:
            session.expire(obj)
        else:
            session.expunge(obj)


def _insert_statement(
    model: type[Any], dialect: str, ignore_conflicts: bool, upsert: Upsert | None
) -> Any:
    if upsert is not None:
        return _new_insert_statement(model, dialect, ignore_conflicts, upsert)
    # Kept per model: SQLAlchemy then computes a kept statement's cache key once, not per call.
    kept = _inserts.setdefault(model, {})
    statement = kept.get((dialect, ignore_conflicts))
    if statement is None:
        statement = _new_insert_statement(model, dialect, ignore_conflicts, None)
        kept[dialect, ignore_conflicts] = statement
    return statement


_inserts: WeakKeyDictionary[type[Any], dict[tuple[str, bool], Any]] = WeakKeyDictionary()


def _new_insert_statement(
    model: type[Any], dialect: str, ignore_conflicts: bool, upsert: Upsert | None
) -> Any:
    if not ignore_conflicts and upsert is None:
        return generic_insert(model)
    insert: Any = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        option = "ignore_conflicts" if ignore_conflicts else "update_conflicts"
        raise NotImplementedError(
            f"bulk_create({option}=True) supports PostgreSQL and SQLite, not {dialect}"
        )
    statement = insert(model)
    if upsert is None:
        return statement.on_conflict_do_nothing()
    return on_conflict_do_update(statement, model, upsert)


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


def _upsert_batches(
    session: Session,
    model: type[T],
    statement: Any,
    rows: list[dict[str, Any]],
    batch_size: int | None,
) -> Iterator[Sequence[T]]:
    """INSERT ... ON CONFLICT DO UPDATE ... RETURNING each batch; objects in no set order.

    Not `sort_by_parameter_order`: SQLAlchemy would send SQLite one statement per row, and on
    PostgreSQL sorts by the primary key, which an updated row does not take in input order.
    The session's objects for updated rows are refreshed (`populate_existing`).
    """
    returning = statement.returning(model)
    for batch in chunks(rows, batch_size or len(rows)):
        yield session.scalars(
            returning, list(batch), execution_options={"populate_existing": True}
        ).all()


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
    loader = plain_inserter(session, model) if returning else None
    for batch in chunks(rows, batch_size or len(rows)):
        if loader is not None and len(batch) == 1:
            # One row (first_or_create's miss, say): a Core INSERT ... RETURNING its columns,
            # the row read into an object directly (see repositories._streaming), as the ORM
            # would have read it. No row comes back for a conflict ignored.
            yield loader.insert_one(session, statement, batch[0])
        elif returning and ascending:
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


def _copy_many(
    session: Session,
    model: type[Any],
    columns: list[CopyColumn],
    rows: list[dict[str, Any]],
    batch_size: int | None,
) -> None:
    """COPY each batch, one COPY per run of rows with the same keys (its column list)."""
    connection = session.connection(bind_arguments={"mapper": inspect(model)})
    attributes = {column.attribute for column in columns}
    for batch in chunks(rows, batch_size or len(rows)):
        for keys, run in groupby(batch, key=frozenset):
            if not keys <= attributes:  # a key COPY cannot write: the INSERT's error
                _execute_many(session, model, generic_insert(model), list(run), None)
                continue
            copy_run(connection, model, columns, keys, list(run))
