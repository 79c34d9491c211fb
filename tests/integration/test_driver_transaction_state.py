"""COMMIT and ROLLBACK are skipped only where the driver says no transaction is open.

uow/_transactions.py does not call the driver's commit() or rollback() when the driver knows,
locally, that its connection has no transaction (psycopg 3 idle outside a pipeline, sqlite3 not
in a transaction): they would do nothing. Everywhere else they are called, so a transaction
begun on the server is always ended.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from tests.models import AppUnitOfWork
from uow import Database
from uow._transactions import _no_transaction

pytestmark = [pytest.mark.both_faces]


def _pooled(uow: AppUnitOfWork) -> Any:
    session: Any = uow.session
    sync_session = getattr(session, "sync_session", session)
    return sync_session.connection().connection  # the pool's proxy of the DBAPI connection


@pytest.mark.sync_only(reason="reads the sync connection's driver state")
def test_the_driver_state_is_read_as_the_driver_reports_it(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        pooled = _pooled(uow)
        assert _no_transaction(pooled)  # lazy BEGIN: nothing begun yet
        uow.users.create(email="ada@example.com", name="Ada")  # BEGIN, INSERT
        assert not _no_transaction(pooled)
    with uow:
        assert _no_transaction(_pooled(uow))  # the commit ended it


def test_a_transaction_begun_on_the_server_is_committed_or_rolled_back(
    uow: AppUnitOfWork,
) -> None:
    with uow:
        uow.users.create(email="ada@example.com", name="Ada")
    with pytest.raises(RuntimeError), uow:
        uow.users.create(email="bob@example.com", name="Bob")
        raise RuntimeError
    with uow:
        uow.session.execute(text("SELECT 1"))  # SQL text: begins on the server
    with uow:
        assert [u.email for u in uow.users.all()] == ["ada@example.com"]


def test_other_drivers_are_always_asked() -> None:
    class Unknown:
        in_transaction = False

    assert not _no_transaction(Unknown())
    assert not _no_transaction(None)
