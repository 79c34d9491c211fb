"""A block that wrote nothing ends without the ORM's commit, and nothing visible changes.

With lazy BEGIN, the outermost block of a session that never began a server transaction, has
nothing to flush, expires nothing at commit and has no commit listener just closes its session
(uow/unit_of_work.py, `_nothing_to_commit`): the COMMIT would have sent nothing. Everything a
user can observe must stay as with the commit: changes made without a flush are still
committed, callbacks run, commit listeners still hear of it, `expire_on_commit` still expires.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm.exc import DetachedInstanceError

from tests.models import AppUnitOfWork, User
from uow import Database
from uow.unit_of_work import _nothing_to_commit

pytestmark = [pytest.mark.both_faces]


def _ada(uow: AppUnitOfWork) -> int:
    with uow:
        return uow.users.create(email="ada@example.com", name="Ada").id


def test_unflushed_changes_of_a_block_that_only_read_are_committed(uow: AppUnitOfWork) -> None:
    ada = _ada(uow)
    with uow:
        user = uow.users.get(ada)
        assert user is not None
        user.name = "Changed"  # no flush: the commit flushes it
    with uow:
        uow.session.add(User(email="bob@example.com", name="Bob"))
    with uow:
        found = uow.users.get(ada)
        assert found is not None
        assert found.name == "Changed"
        uow.session.delete(found)
    with uow:
        assert [u.email for u in uow.users.all()] == ["bob@example.com"]


def test_callbacks_of_a_block_that_only_read_run(uow: AppUnitOfWork) -> None:
    ada = _ada(uow)
    ran: list[str] = []
    with uow:
        assert uow.users.get(ada) is not None
        uow.on_commit(lambda: ran.append("read"))
    assert ran == ["read"]


@pytest.mark.sync_only(reason="looks at the sync session's transaction")
def test_only_a_block_that_began_nothing_skips_the_commit(db: Database, uow: AppUnitOfWork) -> None:
    ada = _ada(uow)
    with uow:
        assert uow.users.get(ada) is not None
        assert _nothing_to_commit(uow.session) is db.lazy_begin
        uow.users.get(ada).name = "Changed"  # type: ignore[union-attr]
        assert not _nothing_to_commit(uow.session)  # something to flush
    with uow:
        uow.users.filter(id=ada).select_for_update().first()  # begins on the server
        assert not _nothing_to_commit(uow.session)


@pytest.mark.sync_only(reason="listens on the sync sessionmaker")
def test_commit_listeners_still_hear_of_a_block_that_only_read(
    db: Database, uow: AppUnitOfWork
) -> None:
    ada = _ada(uow)
    heard: list[str] = []

    def before(_session: Any) -> None:
        heard.append("before_commit")

    def after(_session: Any) -> None:
        heard.append("after_commit")

    factory = db.Session
    event.listen(factory, "before_commit", before)
    event.listen(factory, "after_commit", after)
    try:
        with uow:
            assert uow.users.get(ada) is not None
    finally:
        event.remove(factory, "before_commit", before)
        event.remove(factory, "after_commit", after)
    assert heard == ["before_commit", "after_commit"]


@pytest.mark.sync_only(reason="builds a Database with its own session options")
def test_expire_on_commit_still_expires_what_a_block_read(tmp_path: Any, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("one database shows it")
    db = Database(f"sqlite:///{tmp_path}/expire.db", session_options={"expire_on_commit": True})
    try:
        db.create_all(User.metadata)
        uow = AppUnitOfWork(db)
        ada = _ada(uow)
        with uow:
            user = uow.users.get(ada)
        with pytest.raises(DetachedInstanceError):
            _ = user.name  # type: ignore[union-attr]
    finally:
        db.dispose()
