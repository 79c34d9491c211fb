"""Hypothesis strategies for lookups, shared by the unit and the integration property tests.

Keys are random strings and random `__`-joined combinations of real field, relationship and
operator names; values are ints, strings (some with NUL), None, bools, floats, decimals,
datetimes, bytes, and lists, tuples, sets, iterators and dicts of them. Nothing here opens a
database: tests/unit builds and compiles the lookups, tests/integration runs them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from sqlalchemy import inspect

from repositories._fields import model_fields
from repositories.lookups import OPERATORS
from tests.models import Membership, Post, User

MODELS = [User, Post, Membership]
FIELD_NAMES = sorted({name for model in MODELS for name in model_fields(model)})
OPERATOR_NAMES = sorted(OPERATORS)
# Names that exist on the classes in Python but are not mapped attributes, and near misses.
DECOYS = [
    *["", "x", "Email", "EMAIL", "email ", "metadata", "registry", "__table__", "query"],
    *["_sa_instance_state", "__class__", "__init__", "like", "regex", "id;", "1=1"],
]

SETTINGS = settings(max_examples=200, deadline=None)


def relationships(model: type[Any]) -> dict[str, type[Any]]:
    """The relationships of `model`, by name, with the model each one leads to."""
    return {name: rel.mapper.class_ for name, rel in inspect(model).relationships.items()}


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
    while draw(st.integers(0, 2)) and relationships(current) and len(parts) < 3:
        name = draw(st.sampled_from(sorted(relationships(current))))
        parts.append(name)
        current = relationships(current)[name]
    columns = sorted(set(model_fields(current)) - set(relationships(current)))
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
