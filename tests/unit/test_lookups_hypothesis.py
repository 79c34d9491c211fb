"""Property tests: whatever lookups a caller writes, building them gives SQL or a FieldError.

Building conditions and compiling them for a dialect needs no database. The strategies are in
tests/strategies.py; the properties that run generated lookups on a database are in
tests/integration/test_lookups_properties.py.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import ColumnElement, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import default

from repositories._fields import model_fields
from repositories.lookups import OPERATORS, EmptyResult, build_conditions
from tests.strategies import (
    FIELD_NAMES,
    MODELS,
    OPERATOR_NAMES,
    SETTINGS,
    keys,
    lookups_for,
    real_keys,
    relationships,
)
from uow.errors import FieldError

KNOWN = set(FIELD_NAMES) | set(OPERATOR_NAMES)
DIALECTS = {
    "sqlite": sqlite.dialect(),
    "postgresql": postgresql.dialect(),
    "default": default.DefaultDialect(),
}


def expected_problem(model: type[Any], key: str) -> str | None:
    """The name a FieldError for `key` must mention, or None when the key names a real path.

    A reference walk of the documented rules: relationships step into the related model, a
    column ends the path, then at most one operator.
    """
    parts = key.split("__")
    current = model
    for index, part in enumerate(parts):
        rest = parts[index + 1 :]
        columns = {name for name in model_fields(current) if name not in relationships(current)}
        if part in columns:
            if not rest or (len(rest) == 1 and rest[0] in OPERATORS):
                return None
            return rest[0]
        if part in relationships(current):
            if not rest or (len(rest) == 1 and rest[0] in ("exact", "isnull")):
                return None
            current = relationships(current)[part]
            continue
        return part
    raise AssertionError("unreachable: the last part is a column, a relationship or unknown")


# -- building ----------------------------------------------------------------------------------


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
