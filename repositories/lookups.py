"""Django-style lookups: `field__op=value` turned into SQLAlchemy expressions.

A key is split on `__` and walked through the model's mapper: relationship names step into the
related model (as an `EXISTS` subquery, so to-many relationships never duplicate rows), then a
column attribute, then at most one operator (`exact` when none is given). Every name is checked
against the mapper before any SQL is built, so a typo raises
[`FieldError`][uow.errors.FieldError] naming it and the valid choices. Keys are only ever used to
look attributes up; they never become SQL text, and values are always bound parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID
from weakref import WeakKeyDictionary

from sqlalchemy import ColumnElement, Integer, bindparam, false, func

from repositories._dialects import BIGINT_MAX, BIGINT_MIN, int_bounds, parameter_limit
from repositories._fields import fields_of, unknown_field
from repositories.errors import FieldError

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute, RelationshipProperty
from sqlalchemy.sql import operators

__all__ = [
    "OPERATORS",
    "EmptyResult",
    "Lookup",
    "build_conditions",
    "check_key",
    "in_values",
    "parse_key",
    "template_conditions",
]


class EmptyResult(Exception):
    """Raised internally when a lookup can match nothing (`in=[]`): the caller skips the SQL."""


Column = ColumnElement[Any]
_Op = Callable[[Column, Any, Callable[[], str]], ColumnElement[bool]]


def _exact(column: Column, value: Any, dialect: Callable[[], str]) -> ColumnElement[bool]:
    if _beyond(column, value, dialect) is not None:
        return false()
    return column.is_(None) if value is None else column == value


def _int_bounds(column: Column, dialect: Callable[[], str]) -> tuple[int, int] | None:
    """The integers `column` can hold where the database refuses wider ones (PostgreSQL), else
    None: `age=2**40` then matches nothing and `age__lt=2**40` every row with an age, as in
    Django, instead of an error that would abort the transaction."""
    if not isinstance(column.type, Integer):
        return None  # asked only for integer columns: dialect() is not free
    return int_bounds(column.type, dialect())


def _side(bounds: tuple[int, int] | None, value: Any) -> int | None:
    """-1 or 1 when `value` is an int below or above `bounds`, else None."""
    if bounds is None or not isinstance(value, int) or isinstance(value, bool):
        return None
    return -1 if value < bounds[0] else 1 if value > bounds[1] else None


def _beyond(column: Column, value: Any, dialect: Callable[[], str]) -> int | None:
    """`_side` of one value; the column is looked at only for an int no integer column could
    fail to hold (asking for the dialect is not free, and most keys are small)."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or _SMALLEST <= value <= -_SMALLEST - 1
    ):
        return None
    return _side(_int_bounds(column, dialect), value)


_SMALLEST = -(2**15)  # SMALLINT's lowest: every integer column holds what lies within


def _iexact(column: Column, value: Any, _dialect: Callable[[], str]) -> ColumnElement[bool]:
    if value is None:
        return column.is_(None)
    return func.lower(column) == func.lower(_string(value, "iexact"))


_LIKE: Mapping[str, Callable[[Column, str], ColumnElement[bool]]] = {
    # autoescape makes % and _ in the value literal characters.
    "contains": lambda column, text: column.contains(text, autoescape=True),
    "startswith": lambda column, text: column.startswith(text, autoescape=True),
    "endswith": lambda column, text: column.endswith(text, autoescape=True),
    # lower(x) LIKE lower(y) (ILIKE on PostgreSQL).
    "icontains": lambda column, text: column.icontains(text, autoescape=True),
    "istartswith": lambda column, text: column.istartswith(text, autoescape=True),
    "iendswith": lambda column, text: column.iendswith(text, autoescape=True),
}


def _case_sensitive(kind: str) -> _Op:
    """contains / startswith / endswith, case-sensitive on every database.

    SQLite's LIKE ignores ASCII case, so there we compare with instr()/substr() instead (no
    wildcards involved); elsewhere LIKE with `%` and `_` escaped.
    """

    def build(column: Column, value: Any, dialect: Callable[[], str]) -> ColumnElement[bool]:
        text = _string(value, kind)
        if dialect() != "sqlite":
            return _LIKE[kind](column, text)
        if not text:
            return column.is_not(None)
        if kind == "contains":
            return func.instr(column, text) > 0
        start = 1 if kind == "startswith" else -len(text)
        return func.substr(column, start, len(text)) == text

    return build


def _case_insensitive(kind: str) -> _Op:
    def build(column: Column, value: Any, _dialect: Callable[[], str]) -> ColumnElement[bool]:
        return _LIKE[kind](column, _string(value, kind))

    return build


def _in(column: Column, value: Any, dialect: Callable[[], str]) -> ColumnElement[bool]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise FieldError(
            f"'in' takes an iterable of values (list, tuple, set, generator...), "
            f"not {type(value).__name__}"
        )
    values = list(value)
    if not values:
        raise EmptyResult
    bounds = _int_bounds(column, dialect)
    values = [item for item in values if _side(bounds, item) is None]
    if not values:
        return false()
    name = dialect()
    limit = parameter_limit(name)
    if len(values) > limit:
        raise FieldError(
            f"'in' got {len(values):,} values; one statement on {name} binds at most "
            f"about {limit:,}: use in_bulk(), which chunks, or pass a subquery positionally, "
            "as Model.field.in_(select(...))"
        )
    return column.in_(values)


def _range(column: Column, value: Any, dialect: Callable[[], str]) -> ColumnElement[bool]:
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
    bounds = _int_bounds(column, dialect)
    low_side, high_side = _side(bounds, low), _side(bounds, high)
    if low_side == 1 or high_side == -1:
        return false()
    if low_side == -1:
        return _compare("lte")(column, high, dialect)
    if high_side == 1:
        return _compare("gte")(column, low, dialect)
    return column.between(low, high)


def _isnull(column: Column, value: Any, _dialect: Callable[[], str]) -> ColumnElement[bool]:
    if not isinstance(value, bool):
        raise FieldError(f"'isnull' takes True or False, not {value!r}")
    return column.is_(None) if value else column.is_not(None)


_COMPARISONS: Mapping[str, Callable[[Column, Any], ColumnElement[bool]]] = {
    "gt": lambda column, value: column > value,
    "gte": lambda column, value: column >= value,
    "lt": lambda column, value: column < value,
    "lte": lambda column, value: column <= value,
}


def _compare(op: str) -> _Op:
    def build(column: Column, value: Any, dialect: Callable[[], str]) -> ColumnElement[bool]:
        if value is None:
            raise FieldError(f"'{op}' cannot compare with None; use isnull=True")
        beyond = _beyond(column, value, dialect)
        if beyond is not None:  # every value the column holds is on one side of `value`
            everything: ColumnElement[bool] = column.is_not(None)
            return everything if (beyond < 0) == (op in ("gt", "gte")) else false()
        return _COMPARISONS[op](column, value)

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
    "gt": _compare("gt"),
    "gte": _compare("gte"),
    "lt": _compare("lt"),
    "lte": _compare("lte"),
    "range": _range,
    "isnull": _isnull,
}
"""The lookup operators by Django name (`exact` is used when a key names none)."""


def check_key(model: type[Any], pk: Any, dialect: Callable[[], str]) -> bool:
    """Check a primary key for `Session.get` as `filter(id=...)` checks its value, before SQL.

    `pk` is a value, a tuple in primary key order, or a dict by attribute name. Returns False
    when no row can have that key (None, or an integer wider than its column where the
    database would refuse it and abort the transaction); a shape SQLAlchemy itself refuses
    (a tuple of the wrong length) is left to it.

    Raises:
        FieldError: a value is of the wrong type for its column, or a dict names a field that
            is not part of the primary key.
    """
    fields = fields_of(model)
    # The common case, answered at once: a small int for a single integer key fits any
    # integer column (other shapes and types take the checks below).
    single_int_key = (
        len(fields.primary_key) == 1 and fields.python_types[fields.primary_key[0]] is int
    )
    if single_int_key and type(pk) is int and _SMALLEST <= pk <= -_SMALLEST - 1:
        return True
    if isinstance(pk, Mapping):
        values = dict(pk)
        for name in values:
            if name not in fields.primary_key:
                raise FieldError(
                    f"{name!r} is not part of {model.__name__}'s primary key; get() takes "
                    f"{', '.join(fields.primary_key)} (use one() or first() for other fields)"
                )
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


# The lookups a template can stand for: one comparison of a column with one value, whose SQL
# does not depend on the value (None, wide integers and collections change it).
_TEMPLATE_OPERATORS: Mapping[str, Callable[[Column, Any], ColumnElement[bool]]] = {
    "exact": lambda column, value: column == value,
    **_COMPARISONS,
}
_templates: WeakKeyDictionary[type[Any], dict[tuple[str, str, int], ColumnElement[bool]]] = (
    WeakKeyDictionary()
)


def template_conditions(
    model: type[Any], lookups: Mapping[str, Any], start: int, dialect: Callable[[], str]
) -> tuple[tuple[ColumnElement[bool], ...], dict[str, Any]] | None:
    """The conditions of `lookups` with named bind parameters in place of the values, and the
    values by name; None unless every lookup compares a column of `model` with one value.

    The conditions are made once per (model, field, operator, position) and reused, so a query
    of the same shape is the same statement every time: SQLAlchemy keys, compiles and sets it
    up once, and each call only binds its values, instead of building a new statement (which
    costs more than the SQL round trip on SQLite). `start` numbers the parameters after those
    of the query being refined. Values are checked as `build_conditions` checks them.

    Raises:
        FieldError: a value has the wrong type for its column (before any SQL).
    """
    fields = fields_of(model)
    conditions: list[ColumnElement[bool]] = []
    values: dict[str, Any] = {}
    for position, (key, value) in enumerate(lookups.items(), start):
        name, *rest = key.split("__")
        op = rest[0] if len(rest) == 1 else "exact" if not rest else ""
        if name not in fields.columns or op not in _TEMPLATE_OPERATORS or value is None:
            return None  # build_conditions handles (or refuses) everything else
        _check_value(model, name, fields.python_types[name], op, value)
        column = getattr(model, name)
        if isinstance(value, _COLLECTIONS) or _beyond(column, value, dialect) is not None:
            return None
        # The mapped column's own type: `column.type` (the attribute's) is the same object,
        # found through the attribute's comparator at a cost of microseconds per read.
        column_type = fields.columns[name].columns[0].type
        if column_type.coerce_compared_value(operators.eq, value) is not column_type:
            return None  # compared as its own type (a datetime against a DATE column)
        parameter = f"uow_lookup_{position}"
        made = _templates.setdefault(model, {})
        condition = made.get((name, op, position))
        if condition is None:
            placeholder = bindparam(parameter, type_=column_type)
            condition = made[(name, op, position)] = _TEMPLATE_OPERATORS[op](column, placeholder)
        conditions.append(condition)
        values[parameter] = value
    return tuple(conditions), values


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


@dataclass(frozen=True, slots=True)
class Lookup:
    """A lookup key walked through the mappers: where its field is, and its operator.

    `path` holds the relationships stepped through, outermost first; `model` is the class that
    has `name`, a column (`relationship` False) or a relationship compared as a whole
    (`author=ada`, `posts__isnull=True`; `op` is then "exact" or "isnull").
    """

    path: tuple[RelationshipProperty[Any], ...]
    model: type[Any]
    name: str
    op: str
    relationship: bool


def parse_key(model: type[Any], key: str) -> Lookup:
    """Walk `key` (`"author__email__iexact"`) through `model`'s mapper; the one parser of keys.

    Raises:
        FieldError: a name is not a field or relationship, the operator is unknown, or the key
            ends at a relationship with an operator other than `exact`/`isnull`.
    """
    parts = key.split("__")
    path: list[RelationshipProperty[Any]] = []
    current = model
    for index, part in enumerate(parts):
        fields = fields_of(current)
        rest = parts[index + 1 :]
        if part in fields.columns:
            return Lookup(tuple(path), current, part, _operator(key, current, rest), False)
        if part in fields.relationships:
            relationship = fields.relationships[part]
            if not rest or (len(rest) == 1 and rest[0] in ("exact", "isnull")):
                op = rest[0] if rest else "exact"
                return Lookup(tuple(path), current, part, op, True)
            path.append(relationship)
            current = relationship.mapper.class_
            continue
        where = f" (in {current.__name__}, reached through {key!r})" if path else ""
        raise unknown_field(current, part, why=where)
    raise FieldError(f"lookup {key!r} ends at a relationship; name a field of it")


def in_values(value: Any) -> Any:
    """An `in` lookup's value as the operator reads it: a generator read once, into a list."""
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)
    return value


def _condition(
    model: type[Any], key: str, value: Any, dialect: Callable[[], str]
) -> ColumnElement[bool]:
    lookup = parse_key(model, key)
    current, part, op = lookup.model, lookup.name, lookup.op
    if lookup.relationship:
        rest = [op] if op == "isnull" else []
        return _through(lookup.path, _relationship_condition(current, part, rest, value))
    column = getattr(current, part)
    if op == "in":
        value = in_values(value)  # a generator is read once, here, so its values are checked
    _check_value(current, part, fields_of(current).python_types[part], op, value)
    condition = OPERATORS[op](column, value, dialect)
    return _through(lookup.path, condition)


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
    attribute: InstrumentedAttribute[Any] = getattr(model, name)
    if rest and rest[0] == "isnull":
        if not isinstance(value, bool):
            raise FieldError(f"'isnull' takes True or False, not {value!r}")
        exists = attribute.has() if not attribute.property.uselist else attribute.any()
        return ~exists if value else exists
    if attribute.property.uselist:
        raise FieldError(f"{model.__name__}.{name} is a collection; filter on one of its fields")
    target = attribute.property.mapper.class_
    if value is not None and not isinstance(value, target):
        raise FieldError(
            f"{model.__name__}.{name} takes a {target.__name__} object or None, not "
            f"{type(value).__name__}; to filter by key, use {name}__<field>=..."
        )
    return attribute == value


_STRING_OPERATORS = frozenset(
    {"iexact", "contains", "icontains", "startswith", "istartswith", "endswith", "iendswith"}
)
_COLLECTIONS = (list, tuple, set, frozenset, dict, bytearray)


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
        return is_int and BIGINT_MIN <= value <= BIGINT_MAX
    if expected in (float, Decimal):
        return isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if expected in (str, bytes, datetime, date, time, timedelta, UUID):
        return isinstance(value, expected)
    return True  # other types (enums, custom types) convert values themselves


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _through(
    path: tuple[RelationshipProperty[Any], ...], condition: ColumnElement[bool]
) -> ColumnElement[bool]:
    # Innermost first: Post.author.has(User.org.has(Org.name == x)). EXISTS, never a JOIN,
    # so a to-many step cannot multiply the rows of the outer query.
    for relationship in reversed(path):
        attribute = relationship.class_attribute
        condition = attribute.any(condition) if relationship.uselist else attribute.has(condition)
    return condition
