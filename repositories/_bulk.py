"""The write paths of `bulk_create` (multi-row INSERT, upsert, COPY), and `in_bulk`'s checks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    ColumnElement,
    Index,
    PrimaryKeyConstraint,
    UniqueConstraint,
    bindparam,
    inspect,
)
from sqlalchemy import insert as generic_insert
from sqlalchemy.dialects import postgresql, sqlite

from repositories._connection import copy_rows, protected_write
from repositories._fields import check_columns, fields_of
from repositories._links import Link, links_of
from repositories.errors import FieldError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from sqlalchemy.engine import Connection, Dialect
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


# -- upsert: bulk_create(update_conflicts=True) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Upsert:
    """Rows whose `unique_fields` match an existing row's update its `update_fields` with the
    proposed values (`ON CONFLICT (unique_fields) DO UPDATE SET f = EXCLUDED.f`)."""

    unique_fields: tuple[str, ...]
    update_fields: tuple[str, ...]


def upsert_of(
    model: type[Any],
    *,
    ignore_conflicts: bool,
    update_conflicts: bool,
    unique_fields: Iterable[str] | None,
    update_fields: Iterable[str] | None,
) -> Upsert | None:
    """bulk_create's conflict options, checked as Django checks them, before any SQL.

    Raises:
        ValueError: both kinds of conflict handling, or fields without `update_conflicts`.
        TypeError: a string where a list of field names belongs.
        FieldError: a field is unknown, `unique_fields` are not together unconditionally
            unique, or `update_fields` is empty or names a unique field or the primary key.
    """
    if ignore_conflicts and update_conflicts:
        raise ValueError("ignore_conflicts and update_conflicts are mutually exclusive")
    if not update_conflicts:
        if unique_fields is not None or update_fields is not None:
            raise ValueError(
                "unique_fields and update_fields only apply to update_conflicts=True; pass "
                "it to update the rows that conflict, or leave the fields out"
            )
        return None
    unique = _option_fields(model, "unique_fields", unique_fields, "['email']")
    update = _option_fields(model, "update_fields", update_fields, "['name']")
    for name in update:
        if name in unique:
            raise FieldError(
                f"update_fields names {name!r}, which is in unique_fields: a conflicting row "
                "already has that value; leave it out of update_fields"
            )
        if name in fields_of(model).primary_key:
            raise FieldError(
                f"update_fields names {name!r}, the primary key of {model.__name__}, which "
                "bulk_create never updates (rows referring to it would be orphaned); leave it "
                "out of update_fields"
            )
    _check_conflict_target(model, unique)
    return Upsert(unique, update)


def _option_fields(
    model: type[Any], option: str, names: Iterable[str] | None, example: str
) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"{option} takes a list of field names, not a string: {option}=[{names!r}]")
    fields = tuple(dict.fromkeys(names or ()))
    if not fields:
        raise FieldError(
            f"bulk_create(update_conflicts=True) needs {option} (for example {option}={example})"
        )
    check_columns(model, fields, why=f" (in {option})")
    return fields


def _check_conflict_target(model: type[Any], names: tuple[str, ...]) -> None:
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


_Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _SendOrder:
    """The order an upsert sends its rows in, and the way back to the input order.

    Sorted by the unique fields' values: concurrent upserts of overlapping keys then lock their
    rows in the same order and cannot deadlock. Rows that cannot conflict (a unique value
    missing or NULL) go last, in input order.
    """

    names: tuple[str, ...]  # the unique fields
    keys: list[_Key | None]  # each input row's unique values; None where it cannot conflict
    order: list[int]  # input positions, in the order sent

    @classmethod
    def of(cls, rows: list[dict[str, Any]], upsert: Upsert) -> _SendOrder:
        """Raises ValueError for two rows with the same unique values (before any SQL)."""
        keys = [_key_of(row.get, upsert.unique_fields) for row in rows]
        first: dict[_Key, int] = {}
        for position, key in enumerate(keys):
            if key is not None and first.setdefault(key, position) != position:
                values = zip(upsert.unique_fields, key, strict=True)
                raise ValueError(
                    f"bulk_create(update_conflicts=True) got items {first[key]} and {position} "
                    f"with the same {', '.join(f'{n}={v!r}' for n, v in values)}: a row can "
                    "be upserted once per call; merge them first"
                )
        try:
            order = sorted(
                range(len(rows)), key=lambda i: (1, i) if keys[i] is None else (0, keys[i])
            )
        except TypeError:  # values of types that do not compare: any order is still correct
            order = list(range(len(rows)))
        return cls(upsert.unique_fields, keys, order)

    def in_input_order(self, returned: list[T]) -> list[T]:
        """The objects `returned` (one per row, in the database's order), in input order.

        Matched by their unique values. A row that could not be matched (no unique values, or
        values the database stored in another form) takes the next unmatched object in the
        order rows were sent, which is the order PostgreSQL and SQLite return them in.
        """
        where: dict[_Key, int] = {}
        for position, obj in enumerate(returned):
            key = _key_of(partial(getattr, obj), self.names)
            if key is not None:
                where.setdefault(key, position)
        result: list[T | None] = [None] * len(self.keys)
        used = set()
        for row, key in enumerate(self.keys):
            if key is not None and key in where:
                result[row] = returned[where[key]]
                used.add(where[key])
        unmatched = [obj for position, obj in enumerate(returned) if position not in used]
        pending = [row for row in self.order if result[row] is None]
        for row, obj in zip(pending, unmatched, strict=True):
            result[row] = obj
        return [obj for obj in result if obj is not None]


def _key_of(get: Callable[[str], Any], names: tuple[str, ...]) -> _Key | None:
    key = tuple(get(name) for name in names)
    if any(value is None for value in key):
        return None  # missing or NULL: NULLs never conflict
    try:
        hash(key)
    except TypeError:
        return None
    return key


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
    order = _SendOrder.of(rows, upsert) if upsert else None
    sent = [rows[i] for i in order.order] if order else rows
    plain = not (return_objects or ignore_conflicts or upsert)
    copying = _copy_columns(model, dialect) if plain else None
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
    columns = fields_of(model).columns
    target = [columns[name].columns[0] for name in upsert.unique_fields]
    updated = [columns[name].columns[0] for name in upsert.update_fields]
    return statement.on_conflict_do_update(
        index_elements=target,
        set_={column: statement.excluded[column.key] for column in updated},
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


# -- COPY: bulk_create(return_objects=False) on PostgreSQL -------------------------------------


@dataclass(frozen=True, slots=True)
class _CopyColumn:
    attribute: str
    key: str  # how a default's context names it (the column's key)
    name: str  # the column's name, quoted for SQL
    default: Any  # the column's ColumnDefault (a value or a Python function), or None
    process: Callable[[Any], Any] | None  # the type's bind processor, as an INSERT applies it


def _copy_columns(model: type[Any], dialect: Dialect) -> list[_CopyColumn] | None:
    """The columns COPY writes for `model`, or None where it cannot stand in for an INSERT.

    COPY sends values, never SQL: a column whose default or bind expression is SQL
    (`default=func.now()`, a `Sequence`, a type wrapping its value in a function) keeps the
    INSERT path, as do models on several tables and drivers other than psycopg 3 (sync).
    Python defaults (`default=0`, `default=uuid4`, a function of the context) are computed
    for each row that leaves the column out, as SQLAlchemy's INSERT computes them.
    """
    if (dialect.name, dialect.driver, dialect.is_async) != ("postgresql", "psycopg", False):
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
        columns.append(_CopyColumn(attribute, column.key, quote(column.name), default, process))
    return columns


def _copy_many(
    session: Session,
    model: type[Any],
    columns: list[_CopyColumn],
    rows: list[dict[str, Any]],
    batch_size: int | None,
) -> None:
    """COPY each batch, one COPY per run of rows with the same keys (its column list)."""
    connection = session.connection(bind_arguments={"mapper": inspect(model)})
    preparer = connection.dialect.identifier_preparer
    table = preparer.format_table(inspect(model).local_table)
    attributes = {column.attribute for column in columns}
    for batch in chunks(rows, batch_size or len(rows)):
        for keys, run in groupby(batch, key=frozenset):
            if not keys <= attributes:  # a key COPY cannot write: the INSERT's error
                _execute_many(session, model, generic_insert(model), list(run), None)
                continue
            # A column a row leaves out is left out of the COPY too (so the server applies
            # its own default), unless SQLAlchemy would have computed a default for it.
            written = [c for c in columns if c.attribute in keys or c.default is not None]
            names = ", ".join(column.name for column in written)
            values = _copy_values(connection, written, keys, list(run))
            copy_rows(connection, f"COPY {table} ({names}) FROM STDIN", values)


def _copy_values(
    connection: Connection, columns: list[_CopyColumn], keys: frozenset[str], rows: list[Any]
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
