"""Property tests: whatever lookups a caller writes, the result is rows or a typed library error.

Keys are random strings and random `__`-joined combinations of real field, relationship and
operator names; values are ints, strings (some with NUL), None, bools, floats, decimals,
datetimes, bytes, and lists, tuples, sets, iterators and dicts of them. Building conditions
needs no database; the string property runs against an in-memory SQLite database
(module-level, so hypothesis does not mix it with pytest fixtures). The property that runs
generated lookups on SQLite and PostgreSQL is in tests/integration/test_lookups_properties.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import ColumnElement, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import default

from repositories.lookups import OPERATORS, EmptyResult, build_conditions, model_fields
from tests.models import AppUnitOfWork, Base, Membership, Post, User
from uow import Database
from uow.errors import FieldError

MODELS = [User, Post, Membership]
FIELD_NAMES = sorted({name for model in MODELS for name in model_fields(model)})
OPERATOR_NAMES = sorted(OPERATORS)
KNOWN = set(FIELD_NAMES) | set(OPERATOR_NAMES)
# Names that exist on the classes in Python but are not mapped attributes, and near misses.
DECOYS = [
    *["", "x", "Email", "EMAIL", "email ", "metadata", "registry", "__table__", "query"],
    *["_sa_instance_state", "__class__", "__init__", "like", "regex", "id;", "1=1"],
]
DIALECTS = {
    "sqlite": sqlite.dialect(),
    "postgresql": postgresql.dialect(),
    "default": default.DefaultDialect(),
}


def _relationships(model: type[Any]) -> dict[str, type[Any]]:
    return {name: rel.mapper.class_ for name, rel in inspect(model).relationships.items()}


SETTINGS = settings(max_examples=200, deadline=None)

name_parts = st.sampled_from(FIELD_NAMES + OPERATOR_NAMES + DECOYS)
keys = st.one_of(
    st.text(max_size=30),
    st.lists(name_parts, min_size=1, max_size=5).map("__".join),
    st.lists(st.one_of(name_parts, st.text(max_size=8)), min_size=1, max_size=4).map("__".join),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.text(max_size=5).map(lambda text: f"{text}\x00"),  # PostgreSQL cannot hold a NUL
    st.binary(max_size=10),
    st.decimals(),
    st.datetimes(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.lists(scalars, max_size=4).map(tuple),
    st.lists(scalars, max_size=4).map(iter),  # read once: the check must not consume it
    st.tuples(scalars, scalars),
    st.sets(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)


@st.composite
def real_keys(draw: st.DrawFn, model: type[Any]) -> str:
    """A key along a real path of `model`: relationships, then a column or not, then an op."""
    parts: list[str] = []
    current = model
    while draw(st.integers(0, 2)) and _relationships(current) and len(parts) < 3:
        name = draw(st.sampled_from(sorted(_relationships(current))))
        parts.append(name)
        current = _relationships(current)[name]
    columns = sorted(set(model_fields(current)) - set(_relationships(current)))
    if not parts or draw(st.integers(0, 3)):
        parts.append(draw(st.sampled_from(columns)))
    operator = draw(st.none() | st.sampled_from(OPERATOR_NAMES))
    if operator:
        parts.append(operator)
    return "__".join(parts)


def lookups_for(model: type[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """One to three lookups, most of them along real paths of `model`."""
    some_key = st.one_of(keys, real_keys(model), real_keys(model), real_keys(model))
    return st.dictionaries(some_key, values, min_size=1, max_size=3)


def expected_problem(model: type[Any], key: str) -> str | None:
    """The name a FieldError for `key` must mention, or None when the key names a real path.

    A reference walk of the documented rules: relationships step into the related model, a
    column ends the path, then at most one operator.
    """
    parts = key.split("__")
    current = model
    for index, part in enumerate(parts):
        rest = parts[index + 1 :]
        columns = {name for name in model_fields(current) if name not in _relationships(current)}
        if part in columns:
            if not rest or (len(rest) == 1 and rest[0] in OPERATORS):
                return None
            return rest[0]
        if part in _relationships(current):
            if not rest or (len(rest) == 1 and rest[0] in ("exact", "isnull")):
                return None
            current = _relationships(current)[part]
            continue
        return part
    raise AssertionError("unreachable: the last part is a column, a relationship or unknown")


# -- building (no database) --------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), dialect=st.sampled_from(sorted(DIALECTS)))
def test_a_key_builds_only_when_every_name_in_it_is_real(data: st.DataObject, dialect: str) -> None:
    model = data.draw(st.sampled_from(MODELS))
    key = data.draw(st.one_of(keys, real_keys(model)))
    # None is a valid value for exact/iexact and a FieldError for every other operator, so
    # whether the key itself is accepted is what decides the outcome here.
    problem = expected_problem(model, key)
    try:
        conditions = build_conditions(model, {key: None}, lambda: dialect)
    except FieldError as error:
        message = str(error)
        if problem is not None:
            assert repr(problem) in message, (key, message)
            if problem not in KNOWN:
                assert "valid" in message, (key, message)
        return
    assert problem is None, f"{key!r} built although {problem!r} is not a valid name there"
    assert all(part in KNOWN for part in key.split("__"))
    _compile(model, conditions, dialect)


@SETTINGS
@given(data=st.data(), dialect=st.sampled_from(sorted(DIALECTS)))
def test_any_lookups_build_and_compile_or_raise_a_field_error(
    data: st.DataObject, dialect: str
) -> None:
    model = data.draw(st.sampled_from(MODELS))
    lookups = data.draw(lookups_for(model))
    try:
        conditions = build_conditions(model, lookups, lambda: dialect)
    except (FieldError, EmptyResult):
        return
    assert len(conditions) == len(lookups)
    for key in lookups:
        assert expected_problem(model, key) is None, key
    _compile(model, conditions, dialect)


def _compile(model: type[Any], conditions: list[ColumnElement[bool]], dialect: str) -> None:
    sql = str(select(model).where(*conditions).compile(dialect=DIALECTS[dialect]))
    assert sql.startswith("SELECT")


# -- running (in-memory SQLite) ----------------------------------------------------------------

DATABASE = Database("sqlite://")
ROWS = {"users": 4, "posts": 3, "memberships": 2}


def seed_rows(uow: AppUnitOfWork) -> None:
    """Commit a few rows (`ROWS` of each) with wildcards, case and NULLs in them."""
    with uow:
        ann = uow.users.create(email="ann@example.com", name="Ann", age=30)
        bob = uow.users.create(email="bob@example.org", name="b%_b", age=None)
        uow.users.create(email="cy@example.net", name="CY", age=7)
        uow.users.create(email="dee@example.net", name="", age=-1)
        uow.posts.create(title="Hello", author_id=ann.id)
        uow.posts.create(title="hello %", author_id=ann.id)
        uow.posts.create(title="", author_id=bob.id)
        uow.memberships.create(user_id=ann.id, group="admins", role="owner")
        uow.memberships.create(user_id=bob.id, group="staff")


@cache
def seeded() -> AppUnitOfWork:
    """The unit of work over the module's in-memory database, with `seed_rows` committed."""
    DATABASE.create_all(Base.metadata)
    uow = AppUnitOfWork(DATABASE)
    seed_rows(uow)
    return uow


@pytest.fixture(scope="module", autouse=True)
def _dispose_database() -> Iterator[None]:
    yield
    DATABASE.dispose()


ASCII = st.text(alphabet="aAbBzZ%_/\\ .", max_size=6)
STRING_OPS = {
    "exact": lambda name, value: name == value,
    "iexact": lambda name, value: name.lower() == value.lower(),
    "contains": lambda name, value: value in name,
    "icontains": lambda name, value: value.lower() in name.lower(),
    "startswith": lambda name, value: name.startswith(value),
    "istartswith": lambda name, value: name.lower().startswith(value.lower()),
    "endswith": lambda name, value: name.endswith(value),
    "iendswith": lambda name, value: name.lower().endswith(value.lower()),
}


@SETTINGS
@given(
    names=st.lists(ASCII, min_size=1, max_size=6),
    op=st.sampled_from(sorted(STRING_OPS)),
    value=ASCII,
    exclude=st.booleans(),
)
def test_string_operators_agree_with_python_on_sqlite(
    names: list[str], op: str, value: str, exclude: bool
) -> None:
    # Wildcards and the escape character in names and values must match literally; case
    # matters exactly for the operators without an `i`.
    uow = seeded()
    with uow:
        for index, name in enumerate(names):
            uow.users.create(email=f"generated{index}@example.com", name=name)
        query = uow.users.filter(email__startswith="generated")
        lookup = {f"name__{op}": value}
        found = (query.exclude(**lookup) if exclude else query.filter(**lookup)).all()
        expected = {
            f"generated{index}@example.com"
            for index, name in enumerate(names)
            if STRING_OPS[op](name, value) != exclude
        }
        assert {user.email for user in found} == expected
        uow.set_rollback(True)
