"""Properties of generated lookups run on a database.

Generated lookups, run on SQLite and PostgreSQL, give rows or a typed library error, and the
transaction stays usable (a database error would abort it on PostgreSQL). String operators agree
with Python's string methods on SQLite, wildcards and case included.

The strategies are in tests/strategies.py. The databases are module-scoped (hypothesis runs many
examples per test; each rolls back).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import BACKENDS, fresh_database
from tests.models import AppUnitOfWork, Base
from tests.strategies import SETTINGS, lookups_for
from uow import Database
from uow.errors import UowError

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


# -- generated lookups (SQLite and PostgreSQL) -------------------------------------------------


@pytest.fixture(scope="module", params=BACKENDS)
def seeded_uow(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppUnitOfWork]:
    path = Path(tmp_path_factory.mktemp("properties"))
    with fresh_database(str(request.param), path) as database:
        uow = AppUnitOfWork(database)
        seed_rows(uow)
        yield uow


TERMINALS: dict[str, Any] = {
    "all": lambda query: query.all(),
    "first": lambda query: query.first(),
    "one": lambda query: query.one(),
    "count": lambda query: query.count(),
    "exists": lambda query: query.exists(),
    "paginate": lambda query: query.paginate(1, 2).items,
    "iterator": lambda query: list(query.iterator(2)),
}


@SETTINGS
@given(
    data=st.data(),
    repository=st.sampled_from(sorted(ROWS)),
    exclude=st.booleans(),
    terminal=st.sampled_from(sorted(TERMINALS)),
)
def test_generated_lookups_give_rows_or_a_library_error_and_leave_the_transaction_usable(
    seeded_uow: AppUnitOfWork, data: st.DataObject, repository: str, exclude: bool, terminal: str
) -> None:
    uow = seeded_uow
    with uow:
        repo = getattr(uow, repository)
        lookups = data.draw(lookups_for(repo.model), label="lookups")
        try:
            query = repo.exclude(**lookups) if exclude else repo.filter(**lookups)
            result = TERMINALS[terminal](query)
        except UowError:
            pass
        else:
            if isinstance(result, list):
                assert len(result) <= ROWS[repository]
                assert all(isinstance(row, repo.model) for row in result)
            elif terminal == "count":
                assert 0 <= result <= ROWS[repository]
            elif terminal == "exists":
                assert isinstance(result, bool)
            else:
                assert result is None or isinstance(result, repo.model)
        assert repo.count() == ROWS[repository]
        uow.set_rollback(True)


# -- string operators (in-memory SQLite) -------------------------------------------------------


@pytest.fixture(scope="module")
def memory_uow() -> Iterator[AppUnitOfWork]:
    """A unit of work over an in-memory SQLite database, with `seed_rows` committed."""
    database = Database("sqlite://")
    try:
        database.create_all(Base.metadata)
        uow = AppUnitOfWork(database)
        seed_rows(uow)
        yield uow
    finally:
        database.dispose()


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
    memory_uow: AppUnitOfWork, names: list[str], op: str, value: str, exclude: bool
) -> None:
    # Wildcards and the escape character in names and values must match literally; case
    # matters exactly for the operators without an `i`.
    uow = memory_uow
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
