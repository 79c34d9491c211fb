"""Django-style lookups: `field__op=value` turned into SQLAlchemy expressions.

A key is split on `__` and walked through the model's mapper: relationship names step into the
related model (as an `EXISTS` subquery, so to-many relationships never duplicate rows), then a
column attribute, then at most one operator (`exact` when none is given). Every name is checked
against the mapper before any SQL is built, so a typo raises
[`FieldError`][uow.errors.FieldError] naming it and the valid choices. Keys are only ever used to
look attributes up; they never become SQL text, and values are always bound parameters.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any
from uuid import UUID
from weakref import WeakKeyDictionary

from sqlalchemy import BigInteger, ColumnElement, Integer, SmallInteger, false, func, inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import ColumnProperty, Mapper, RelationshipProperty

from repositories.errors import FieldError

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

__all__ = [
    "OPERATORS",
    "EmptyResult",
    "build_conditions",
    "check_columns",
    "check_fields",
    "check_key",
    "model_fields",
]


class EmptyResult(Exception):
    """Raised internally when a lookup can match nothing (`in=[]`): the caller skips the SQL."""


_Op = Callable[[Any, Any, Callable[[], str]], ColumnElement[bool]]


def _exact(column: Any, value: Any, dialect: Callable[[], str]) -> ColumnElement[bool]:
    if _beyond(column, value, dialect) is not None:
        return false()
    result: ColumnElement[bool] = column.is_(None) if value is None else column == value
    return result


# PostgreSQL refuses to compare an integer column with a number wider than its type (and the
# error aborts the transaction). No row can hold such a number, so the lookups answer as Django
# does: `age=2**40` matches nothing, `age__lt=2**40` every row with an age. SQLite stores any
# 64-bit integer in any INTEGER column, so there the value goes to the database as it is.
_INT_BITS = ((BigInteger, 63), (SmallInteger, 15), (Integer, 31))  # subclasses of Integer first


@cache
def _postgresql() -> Dialect:
    dialect: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    return dialect


def _int_bounds(column: Any, dialect: Callable[[], str]) -> tuple[int, int] | None:
    """The integers `column` can hold where the database refuses wider ones, else None."""
    column_type = getattr(column, "type", None)
    if not isinstance(column_type, Integer) or dialect() != "postgresql":
        return None  # a TypeDecorator converts values itself: left to it
    column_type = column_type.dialect_impl(_postgresql())  # with_variant(BigInteger(), ...)
    for type_, bits in _INT_BITS:
        if isinstance(column_type, type_):
            return -(2**bits), 2**bits - 1
    return None


def _side(bounds: tuple[int, int] | None, value: Any) -> int | None:
    """-1 or 1 when `value` is an int below or above `bounds`, else None."""
    if bounds is None or not isinstance(value, int) or isinstance(value, bool):
        return None
    return -1 if value < bounds[0] else 1 if value > bounds[1] else None


def _beyond(column: Any, value: Any, dialect: Callable[[], str]) -> int | None:
    """`_side` of one value; the column is looked at only for an int."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return _side(_int_bounds(column, dialect), value)


def _iexact(column: Any, value: Any, _dialect: Callable[[], str]) -> ColumnElement[bool]:
    if value is None:
        return column.is_(None)  # type: ignore[no-any-return]
    return func.lower(column) == func.lower(_string(value, "iexact"))


def _case_sensitive(kind: str) -> _Op:
    """contains / startswith / endswith, case-sensitive on every database.

    SQLite's LIKE ignores ASCII case, so there we compare with instr()/substr() instead (no
    wildcards involved); elsewhere LIKE with `%` and `_` escaped (autoescape).
    """

    def build(column: Any, value: Any, dialect: Callable[[], str]) -> ColumnElement[bool]:
        text = _string(value, kind)
        if dialect() != "sqlite":
            return getattr(column, kind)(text, autoescape=True)  # type: ignore[no-any-return]
        if not text:
            return column.is_not(None)  # type: ignore[no-any-return]
        if kind == "contains":
            return func.instr(column, text) > 0
        start = 1 if kind == "startswith" else -len(text)
        return func.substr(column, start, len(text)) == text

    return build


def _case_insensitive(method: str) -> _Op:
    def build(column: Any, value: Any, _dialect: Callable[[], str]) -> ColumnElement[bool]:
        # lower(x) LIKE lower(y) (ILIKE on PostgreSQL); autoescape makes % and _ literal.
        text = _string(value, method)
        return getattr(column, method)(text, autoescape=True)  # type: ignore[no-any-return]

    return build


def _in(column: Any, value: Any, _dialect: Callable[[], str]) -> ColumnElement[bool]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise FieldError(
            f"'in' takes an iterable of values (list, tuple, set, generator...), "
            f"not {type(value).__name__}"
        )
    values = list(value)
    if not values:
        raise EmptyResult
    bounds = _int_bounds(column, _dialect)
    values = [item for item in values if _side(bounds, item) is None]
    if not values:
        return false()
    dialect = _dialect()
    limit = _in_limit(dialect)
    if limit is not None and len(values) > limit:
        raise FieldError(
            f"'in' got {len(values):,} values; one statement on {dialect} binds at most "
            f"about {limit:,}: use in_bulk(), which chunks, or pass a subquery positionally, "
            "as Model.field.in_(select(...))"
        )
    return column.in_(values)  # type: ignore[no-any-return]


@cache
def _in_limit(dialect: str) -> int | None:
    """The values one IN (...) may bind: below the driver's limit on a statement's parameters
    (SQLite: what this build of the library allows, 32,766 by default; psycopg: 65,535),
    leaving room for the rest of the statement. Asked on first use, not at import."""
    if dialect == "postgresql":
        return 65_000
    if dialect != "sqlite":
        return None
    connection = sqlite3.connect(":memory:")
    try:
        return int(connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)) - 500
    except AttributeError:  # Python < 3.11: the documented defaults
        return (32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999) - 500
    finally:
        connection.close()


def _range(column: Any, value: Any, _dialect: Callable[[], str]) -> ColumnElement[bool]:
    if not isinstance(value, list | tuple):  # a set or a generator has no low and high end
        raise FieldError(
            f"'range' takes a (low, high) pair as a list or tuple, not {type(value).__name__}"
        )
    pair = list(value)
    if len(pair) != 2:
        raise FieldError(f"'range' takes a (low, high) pair, got {len(pair)} values")
    if pair[0] is None or pair[1] is None:
        raise FieldError("'range' bounds cannot be None")
    low, high = pair
    bounds = _int_bounds(column, _dialect)
    low_side, high_side = _side(bounds, low), _side(bounds, high)
    if low_side == 1 or high_side == -1:
        return false()
    if low_side == -1:
        return _compare("lte", "__le__")(column, high, _dialect)
    if high_side == 1:
        return _compare("gte", "__ge__")(column, low, _dialect)
    return column.between(low, high)  # type: ignore[no-any-return]


def _isnull(column: Any, value: Any, _dialect: Callable[[], str]) -> ColumnElement[bool]:
    if not isinstance(value, bool):
        raise FieldError(f"'isnull' takes True or False, not {value!r}")
    return column.is_(None) if value else column.is_not(None)  # type: ignore[no-any-return]


def _compare(op: str, method: str) -> _Op:
    def build(column: Any, value: Any, dialect: Callable[[], str]) -> ColumnElement[bool]:
        if value is None:
            raise FieldError(f"'{op}' cannot compare with None; use isnull=True")
        beyond = _beyond(column, value, dialect)
        if beyond is not None:  # every value the column holds is on one side of `value`
            everything: ColumnElement[bool] = column.is_not(None)
            return everything if (beyond < 0) == (op in ("gt", "gte")) else false()
        return getattr(column, method)(value)  # type: ignore[no-any-return]

    return build


def _string(value: Any, op: str) -> str:
    if not isinstance(value, str):
        raise FieldError(f"'{op}' takes a string, not {type(value).__name__}")
    return value


OPERATORS: Mapping[str, _Op] = {
    "exact": _exact,
    "iexact": _iexact,
    "contains": _case_sensitive("contains"),
    "icontains": _case_insensitive("icontains"),
    "startswith": _case_sensitive("startswith"),
    "istartswith": _case_insensitive("istartswith"),
    "endswith": _case_sensitive("endswith"),
    "iendswith": _case_insensitive("iendswith"),
    "in": _in,
    "gt": _compare("gt", "__gt__"),
    "gte": _compare("gte", "__ge__"),
    "lt": _compare("lt", "__lt__"),
    "lte": _compare("lte", "__le__"),
    "range": _range,
    "isnull": _isnull,
}
"""The lookup operators by Django name (`exact` is used when a key names none)."""


@dataclass(frozen=True, slots=True)
class _Fields:
    columns: frozenset[str]
    relationships: Mapping[str, RelationshipProperty[Any]]
    # Column name -> the Python type its values have (None when the type does not say).
    # Cached: reading `Model.attr.type.python_type` costs microseconds on every lookup.
    python_types: Mapping[str, type[Any] | None]
    primary_key: tuple[str, ...]  # attribute names, in the mapper's primary key order

    @property
    def names(self) -> list[str]:
        return sorted(self.columns | self.relationships.keys())


def _mapper(model: type[Any]) -> Mapper[Any]:
    mapper = inspect(model, raiseerr=False)
    if not isinstance(mapper, Mapper):
        raise TypeError(f"{model!r} is not a mapped SQLAlchemy class")
    return mapper


_cache: WeakKeyDictionary[type[Any], _Fields] = WeakKeyDictionary()


def _fields(model: type[Any]) -> _Fields:
    fields = _cache.get(model)
    if fields is None:
        mapper = _mapper(model)
        column_props = [p for p in mapper.attrs if isinstance(p, ColumnProperty)]
        columns = frozenset(p.key for p in column_props)
        relationships = {p.key: p for p in mapper.attrs if isinstance(p, RelationshipProperty)}
        python_types = {p.key: _python_type(p.columns[0].type) for p in column_props}
        primary_key = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        fields = _cache[model] = _Fields(columns, relationships, python_types, primary_key)
    return fields


def _python_type(type_: Any) -> type[Any] | None:
    try:
        python_type: type[Any] = type_.python_type
    except NotImplementedError:
        return None
    return python_type


def model_fields(model: type[Any]) -> list[str]:
    """The attribute names of `model` that lookups and values may use, sorted."""
    return _fields(model).names


def check_fields(model: type[Any], names: Iterable[str]) -> None:
    """Raise `FieldError` if any of `names` is not a mapped attribute of `model`."""
    fields = _fields(model)
    for name in names:
        if name not in fields.columns and name not in fields.relationships:
            raise FieldError(
                f"{model.__name__} has no field {name!r}; valid fields: {', '.join(fields.names)}"
            )


def check_key(model: type[Any], pk: Any, dialect: Callable[[], str]) -> bool:
    """Check a primary key for `Session.get` as `filter(id=...)` checks its value, before SQL.

    `pk` is a value, a tuple in primary key order, or a dict by attribute name. Returns False
    when no row can have that key (None, or an integer wider than its column where the
    database would refuse it and abort the transaction); a shape SQLAlchemy itself refuses
    (a tuple of the wrong length) is left to it.

    Raises:
        FieldError: a value is of the wrong type for its column, or a dict names no key column.
    """
    fields = _fields(model)
    if isinstance(pk, Mapping):
        values = dict(pk)
        check_fields(model, values)
    elif isinstance(pk, tuple | list):
        if len(pk) != len(fields.primary_key):
            return True
        values = dict(zip(fields.primary_key, pk, strict=True))
    elif len(fields.primary_key) == 1:
        values = {fields.primary_key[0]: pk}
    else:
        return True
    can_match = True
    for name, value in values.items():
        _check_value(model, name, fields.python_types.get(name), "exact", value)
        if value is None or _beyond(getattr(model, name), value, dialect) is not None:
            can_match = False
    return can_match


def check_columns(model: type[Any], names: Iterable[str]) -> None:
    """Raise `FieldError` if any of `names` is not a column attribute of `model`."""
    fields = _fields(model)
    for name in names:
        if name not in fields.columns:
            valid = ", ".join(sorted(fields.columns))
            raise FieldError(f"{model.__name__} has no column {name!r}; valid columns: {valid}")


def build_conditions(
    model: type[Any], lookups: Mapping[str, Any], dialect: Callable[[], str] = lambda: "default"
) -> list[ColumnElement[bool]]:
    """Turn `{"age__gte": 18, ...}` into SQLAlchemy conditions on `model`.

    `dialect` returns the database's dialect name (`"sqlite"`, `"postgresql"`, ...): a few
    operators need a different expression on SQLite to mean the same thing. It is called only
    by those operators.

    Raises:
        FieldError: a key names an unknown field or operator, or a value has the wrong shape.
        EmptyResult: a lookup can never match (`in` with no values); run no SQL.
    """
    conditions: list[ColumnElement[bool]] = []
    empty = False
    for key, value in lookups.items():
        try:
            conditions.append(_condition(model, key, value, dialect))
        except EmptyResult:
            empty = True  # keep validating the other keys before giving up on SQL
    if empty:
        raise EmptyResult
    return conditions


def _condition(
    model: type[Any], key: str, value: Any, dialect: Callable[[], str]
) -> ColumnElement[bool]:
    parts = key.split("__")
    path: list[RelationshipProperty[Any]] = []
    current = model
    for index, part in enumerate(parts):
        fields = _fields(current)
        rest = parts[index + 1 :]
        if part in fields.columns:
            op = _operator(key, current, rest)
            column = getattr(current, part)
            if op == "in" and isinstance(value, Iterable) and not isinstance(value, str | bytes):
                value = list(value)  # a generator is read once, here, so its values are checked
            _check_value(current, part, fields.python_types[part], op, value)
            condition = OPERATORS[op](column, value, dialect)
            return _through(path, condition)
        if part in fields.relationships:
            relationship = fields.relationships[part]
            if not rest or (len(rest) == 1 and rest[0] in ("exact", "isnull")):
                condition = _relationship_condition(current, part, rest, value)
                return _through(path, condition)
            path.append(relationship)
            current = relationship.mapper.class_
            continue
        where = f" (in {current.__name__}, reached through {key!r})" if path else ""
        valid = ", ".join(fields.names)
        raise FieldError(f"{current.__name__} has no field {part!r}{where}; valid fields: {valid}")
    raise FieldError(f"lookup {key!r} ends at a relationship; name a field of it")


def _operator(key: str, model: type[Any], rest: list[str]) -> str:
    if not rest:
        return "exact"
    if len(rest) == 1 and rest[0] in OPERATORS:
        return rest[0]
    if rest[0] in OPERATORS:
        raise FieldError(f"lookup {key!r} has something after its operator {rest[0]!r}")
    raise FieldError(
        f"{rest[0]!r} in {key!r} is not a lookup operator nor a relationship of "
        f"{model.__name__}; valid operators: {', '.join(OPERATORS)}"
    )


def _relationship_condition(
    model: type[Any], name: str, rest: list[str], value: Any
) -> ColumnElement[bool]:
    attribute = getattr(model, name)
    if rest and rest[0] == "isnull":
        if not isinstance(value, bool):
            raise FieldError(f"'isnull' takes True or False, not {value!r}")
        exists = attribute.has() if not attribute.property.uselist else attribute.any()
        return ~exists if value else exists  # type: ignore[no-any-return]
    if attribute.property.uselist:
        raise FieldError(f"{model.__name__}.{name} is a collection; filter on one of its fields")
    target = attribute.property.mapper.class_
    if value is not None and not isinstance(value, target):
        raise FieldError(
            f"{model.__name__}.{name} takes a {target.__name__} object or None, not "
            f"{type(value).__name__}; to filter by key, use {name}__<field>=..."
        )
    return attribute == value  # type: ignore[no-any-return]


_STRING_OPERATORS = frozenset(
    {"iexact", "contains", "icontains", "startswith", "istartswith", "endswith", "iendswith"}
)
_COLLECTIONS = (list, tuple, set, frozenset, dict, bytearray)
_BIGINT = (-(2**63), 2**63 - 1)


def _check_value(
    model: type[Any], name: str, expected: type[Any] | None, op: str, value: Any
) -> None:
    """Refuse a value the column cannot hold, before SQL (a database error would abort the
    transaction on PostgreSQL, and SQLite would quietly compare unlike types)."""
    if op in ("in", "range"):
        # `in` arrives as a list; any other shape is the operator's to refuse.
        shaped = isinstance(value, list | tuple) and (op == "in" or len(value) == 2)
        values: list[Any] = list(value) if shaped else []
    else:
        values = [value]
    for item in values:
        if isinstance(item, str) and "\x00" in item:
            # PostgreSQL cannot hold such text: its driver would fail mid-transaction.
            raise FieldError(
                f"{model.__name__}.{name}: {op!r} got text containing a NUL (\\x00) character"
            )
    if op in _STRING_OPERATORS and expected not in (None, str):
        raise FieldError(
            f"{op!r} applies to text; {model.__name__}.{name} holds {expected.__name__} values"
        )
    if op not in ("in", "range", "exact", "gt", "gte", "lt", "lte"):
        return  # isnull and the string operators check their values themselves
    for item in values:
        if item is not None and not _fits(expected, item):
            raise FieldError(
                f"{model.__name__}.{name} holds {getattr(expected, '__name__', 'scalar')} "
                f"values; {op!r} got {type(item).__name__} {_short(item)}"
            )


def _fits(expected: type[Any] | None, value: Any) -> bool:
    if expected in (list, dict):  # ARRAY / JSON columns compare with collections
        return True
    if isinstance(value, _COLLECTIONS):
        return False
    if expected is None:
        return True
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        return is_int and _BIGINT[0] <= value <= _BIGINT[1]
    if expected in (float, Decimal):
        return isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if expected in (str, bytes, datetime, date, time, timedelta, UUID):
        return isinstance(value, expected)
    return True  # other types (enums, custom types) convert values themselves


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _through(
    path: list[RelationshipProperty[Any]], condition: ColumnElement[bool]
) -> ColumnElement[bool]:
    # Innermost first: Post.author.has(User.org.has(Org.name == x)). EXISTS, never a JOIN,
    # so a to-many step cannot multiply the rows of the outer query.
    for relationship in reversed(path):
        attribute = relationship.class_attribute
        condition = attribute.any(condition) if relationship.uselist else attribute.has(condition)
    return condition
