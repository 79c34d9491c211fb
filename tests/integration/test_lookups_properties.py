"""Property: generated lookups, run on SQLite and PostgreSQL, give rows or a typed library error,
and the transaction stays usable (a database error would abort it on PostgreSQL).

The strategies are those of tests/unit/test_lookups_hypothesis.py. The database is module-scoped
(hypothesis runs many examples per test; each rolls back).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import BACKENDS, fresh_database
from tests.models import AppUnitOfWork
from tests.unit.test_lookups_hypothesis import ROWS, SETTINGS, lookups_for, seed_rows
from uow.errors import UowError


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
