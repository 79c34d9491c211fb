"""`Database.session_scope()`: one session shared with the contexts copied from inside the block.

Web frameworks run sync code in worker threads with a *copy* of the request's context. These
tests start such threads themselves (`asyncio.to_thread`, or `threading.Thread` running
`contextvars.copy_context().run`) and check that the session they open is the scope's, and that
the scope closes it (no pooled connection stays checked out) when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest
from sqlalchemy import func, select

from tests.models import AppUnitOfWork, User
from uow import Database, Session

T = TypeVar("T")


class Boom(Exception):
    """The application error raised inside scopes."""


def run_in_copied_context_thread(function: Callable[[], T]) -> T:
    """Run `function` in a new thread, in a copy of the caller's context (as Starlette does)."""
    context = contextvars.copy_context()
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(context.run(function))
        except BaseException as error:  # handed back to the caller below
            errors.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def query_and_return_session(db: Database) -> Callable[[], Session]:
    """What a sync endpoint does: query through `db.s`, which checks a connection out."""

    def work() -> Session:
        assert db.s.execute(select(func.count()).select_from(User)).scalar_one() == 0
        return db.s()

    return work


def assert_closed(db: Database, session: Session) -> None:
    assert not session.in_transaction()
    assert db.engine.pool.checkedout() == 0


# -- threads started inside a scope share its session -------------------------------------------


def test_a_session_a_to_thread_thread_opened_in_a_scope_is_closed_at_its_end(
    db: Database,
) -> None:
    async def main() -> tuple[Session, bool, int]:
        with db.session_scope():
            in_thread = await asyncio.to_thread(query_and_return_session(db))
            checked_out_inside = db.engine.pool.checkedout()
            return in_thread, db.s.registry.has(), checked_out_inside

    in_thread, ours_has_one, checked_out_inside = asyncio.run(main())
    assert not ours_has_one  # the thread's session lived in the thread's copy of the context
    assert checked_out_inside == 1
    assert_closed(db, in_thread)


def test_a_copied_context_thread_in_a_scope_shares_the_session_the_scope_opened_first(
    db: Database,
) -> None:
    with db.session_scope():
        in_scope = db.s()
        in_thread = run_in_copied_context_thread(query_and_return_session(db))
        assert in_thread is in_scope
        assert in_scope.in_transaction()
    assert_closed(db, in_scope)


def test_the_session_a_thread_opened_is_closed_when_the_scope_exits(db: Database) -> None:
    with db.session_scope():
        in_thread = run_in_copied_context_thread(query_and_return_session(db))
        assert db.engine.pool.checkedout() == 1  # the thread's session still holds it
        assert not db.s.registry.has()  # it lives in the thread's context, not in ours
    assert_closed(db, in_thread)
    assert not db.s.registry.has()


def test_the_session_is_closed_when_the_scopes_block_raised(db: Database) -> None:
    sessions: list[Session] = []
    with pytest.raises(Boom), db.session_scope():
        sessions.append(run_in_copied_context_thread(query_and_return_session(db)))
        assert db.engine.pool.checkedout() == 1
        raise Boom
    assert len(sessions) == 1
    assert_closed(db, sessions[0])
    assert not db.s.registry.has()


def test_the_session_is_closed_when_the_thread_raised_inside_a_to_thread_scope(
    db: Database,
) -> None:
    sessions: list[Session] = []

    def fail() -> None:
        sessions.append(query_and_return_session(db)())
        raise Boom

    async def main() -> None:
        with db.session_scope():
            await asyncio.to_thread(fail)

    with pytest.raises(Boom):
        asyncio.run(main())
    assert len(sessions) == 1
    assert_closed(db, sessions[0])


# -- outside a scope: one session per context, as before ---------------------------------------


def test_outside_a_scope_a_copied_context_gets_its_own_session(db: Database) -> None:
    context = contextvars.copy_context()
    in_copy = context.run(db.s)
    try:
        assert in_copy is not db.s()
        assert context.run(db.s) is in_copy
    finally:
        context.run(db.s.remove)


def test_outside_a_scope_a_to_thread_session_is_not_the_callers_and_outlives_the_call(
    db: Database,
) -> None:
    async def main() -> tuple[Session, Session]:
        return await asyncio.to_thread(query_and_return_session(db)), db.s()

    in_thread, in_caller = asyncio.run(main())
    try:
        assert in_thread is not in_caller
        # Nobody closed the thread's session: its connection is still checked out.
        assert in_thread.in_transaction()
        assert db.engine.pool.checkedout() == 1
    finally:
        in_thread.close()
        in_caller.close()
    assert db.engine.pool.checkedout() == 0


# -- one scope, one session ----------------------------------------------------------------------


def test_a_new_scope_starts_with_a_new_session(db: Database) -> None:
    with db.session_scope():
        first = db.s()
        first.execute(select(1))
    with db.session_scope():
        second = db.s()
        assert second is not first
        assert not second.in_transaction()
    assert not first.in_transaction()


def test_a_scope_shares_the_session_the_context_had_before_it_and_leaves_it_open(
    db: Database,
) -> None:
    before = db.s()
    try:
        before.execute(select(1))
        with db.session_scope():
            assert db.s() is before
            assert run_in_copied_context_thread(db.s) is before
        # The session was not the scope's to close: the context keeps it, transaction and all.
        assert db.s() is before
        assert before.in_transaction()
    finally:
        db.s.remove()


def test_a_scope_inside_a_unit_of_work_uses_the_unit_of_works_session(db: Database) -> None:
    uow = AppUnitOfWork(db)
    with uow:
        with db.session_scope():
            assert db.s() is uow.session
            db.s.add(User(email="scoped@example.com", name="Scoped"))
        assert uow.session.in_transaction()
    with uow:
        assert uow.users.exists(email="scoped@example.com")


# PostgreSQL only: on SQLite each open transaction would wait for the others' write lock.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_threads_running_at_once_in_a_scope_each_get_their_own_session(db: Database) -> None:
    workers = 8
    barrier = threading.Barrier(workers)
    seen: list[Session] = []

    def first_use() -> None:
        barrier.wait()
        session = db.s()
        session.execute(select(1))
        seen.append(session)

    with db.session_scope():
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(first_use,))
            for _ in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # Never one session (and one transaction) for concurrent units of work.
        assert len({id(session) for session in seen}) == workers
        assert db.engine.pool.checkedout() == workers
    assert db.engine.pool.checkedout() == 0
    assert not any(session.in_transaction() for session in seen)


# PostgreSQL only: on SQLite the second block would wait at BEGIN for the first one's lock.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_units_of_work_in_threads_of_one_scope_commit_or_roll_back_alone(
    db: Database,
) -> None:
    uow = AppUnitOfWork(db)
    barrier = threading.Barrier(2)

    def work(email: str, fail: bool) -> None:
        with uow:
            uow.users.create(email=email, name="x")
            barrier.wait()  # both blocks are open at once
            if fail:
                raise Boom

    def run(email: str, fail: bool) -> None:
        with contextlib.suppress(Boom):
            work(email, fail)

    with db.session_scope():
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(run, email, fail))
            for email, fail in (("kept@example.com", False), ("lost@example.com", True))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with db.Session() as fresh:
        assert fresh.scalars(select(User.email)).all() == ["kept@example.com"]


def test_remove_inside_a_scope_closes_and_forgets_the_session(db: Database) -> None:
    with db.session_scope():
        first = db.s()
        first.execute(select(1))
        db.s.remove()
        assert not first.in_transaction()
        assert db.engine.pool.checkedout() == 0
        assert not db.s.registry.has()
        second = db.s()
        assert second is not first
        assert run_in_copied_context_thread(db.s) is second  # copied after it was opened
    assert not db.s.registry.has()


def test_remove_in_a_copied_context_closes_the_shared_session_which_the_scope_closes_again(
    db: Database,
) -> None:
    with db.session_scope():
        first = db.s()
        first.execute(select(1))
        run_in_copied_context_thread(db.s.remove)
        assert not first.in_transaction()  # closed; our context may still reopen it
    assert not db.s.registry.has()
    assert db.engine.pool.checkedout() == 0


# -- units of work inside a scope ----------------------------------------------------------------


def test_a_unit_of_work_inside_a_scope_commits_and_leaves_no_session(db: Database) -> None:
    uow = AppUnitOfWork(db)
    with db.session_scope():
        with uow:
            uow.users.create(email="ada@example.com", name="Ada")
            block_session = uow.session
            assert db.s() is block_session
        assert not db.s.registry.has()
        assert not block_session.in_transaction()
        assert db.engine.pool.checkedout() == 0
    with db.Session() as fresh:
        assert fresh.scalars(select(User.email)).all() == ["ada@example.com"]


def test_a_unit_of_work_in_a_thread_inside_a_scope_commits_and_leaves_no_session(
    db: Database,
) -> None:
    uow = AppUnitOfWork(db)

    def write() -> Session:
        with uow:
            uow.users.create(email="bob@example.com", name="Bob")
            return uow.session

    with db.session_scope():
        block_session = run_in_copied_context_thread(write)
        assert not db.s.registry.has()
        assert not block_session.in_transaction()
    assert db.engine.pool.checkedout() == 0
    with db.Session() as fresh:
        assert fresh.scalars(select(User.email)).all() == ["bob@example.com"]


def test_a_failing_unit_of_work_inside_a_scope_rolls_back(db: Database) -> None:
    uow = AppUnitOfWork(db)
    with pytest.raises(Boom), db.session_scope(), uow:
        uow.users.create(email="ada@example.com", name="Ada")
        raise Boom
    assert db.engine.pool.checkedout() == 0
    with db.Session() as fresh:
        assert fresh.scalars(select(User.email)).all() == []
