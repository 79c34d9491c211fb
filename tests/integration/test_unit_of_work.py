"""UnitOfWork on real SQLite and PostgreSQL; what is committed is read from a fresh session."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from repositories import Repository
from tests.integration.helpers import Boom, add_user, committed_emails
from tests.models import AppUnitOfWork, Post, User, UserRepository
from uow import Database, UnitOfWork, UnitOfWorkError
from uow.testing import count_statements

pytestmark = [pytest.mark.both_faces, pytest.mark.through_pgbouncer]

# -- the outermost block ----------------------------------------------------------------------


def test_clean_exit_commits_the_work(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        add_user(uow, "ada@example.com")
        add_user(uow, "bob@example.com")
    assert committed_emails(db) == {"ada@example.com", "bob@example.com"}


def test_an_exception_rolls_back_and_the_same_exception_propagates(
    db: Database, uow: AppUnitOfWork
) -> None:
    error = Boom("application failure")
    with pytest.raises(Boom) as caught:
        with uow:
            add_user(uow, "ada@example.com")
            raise error
    assert caught.value is error
    assert committed_emails(db) == set()


@pytest.mark.parametrize("failing", [False, True], ids=["clean exit", "exception"])
def test_the_session_is_closed_and_removed_after_the_block(
    db: Database, uow: AppUnitOfWork, failing: bool
) -> None:
    with contextlib.suppress(Boom), uow:
        session = db.s()
        add_user(uow, "ada@example.com")
        assert session.in_transaction()
        if failing:
            raise Boom
    assert not uow.in_block
    assert not session.in_transaction()
    assert session.get_transaction() is None
    assert len(session.identity_map) == 0  # closed: everything expunged
    assert db.s() is not session
    assert committed_emails(db) == (set() if failing else {"ada@example.com"})


def test_uow_session_is_the_context_session_inside_the_block(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        assert uow.session is db.s()
        with uow:
            assert uow.session is db.s()
        assert uow.session is db.s()


# -- nesting: savepoints ----------------------------------------------------------------------


def test_an_exception_in_a_nested_block_rolls_back_only_the_inner_work(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        add_user(uow, "outer@example.com")
        with count_statements(db.engine) as log, pytest.raises(Boom), uow:
            add_user(uow, "inner@example.com")
            raise Boom
        assert len(log.matching("SAVEPOINT")) == 1
        assert len(log.matching("ROLLBACK TO SAVEPOINT")) == 1
        # The outer transaction is still usable after the savepoint rolled back.
        assert uow.users.count() == 1
        add_user(uow, "after@example.com")
    assert committed_emails(db) == {"outer@example.com", "after@example.com"}


def test_a_clean_nested_exit_keeps_the_inner_work(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        add_user(uow, "outer@example.com")
        with count_statements(db.engine) as log, uow:
            add_user(uow, "inner@example.com")
        assert len(log.matching("SAVEPOINT")) == 1
        assert len(log.matching("RELEASE SAVEPOINT")) == 1
    assert committed_emails(db) == {"outer@example.com", "inner@example.com"}


def test_an_outer_exception_also_rolls_back_released_nested_work(
    db: Database, uow: AppUnitOfWork
) -> None:
    with pytest.raises(Boom), uow:
        add_user(uow, "outer@example.com")
        with uow:
            add_user(uow, "inner@example.com")
        raise Boom
    assert committed_emails(db) == set()


def test_two_units_of_work_over_one_database_share_the_transaction(
    db: Database, uow: AppUnitOfWork
) -> None:
    other = UnitOfWork(db)
    with uow:
        add_user(uow, "outer@example.com")
        with count_statements(db.engine) as log, pytest.raises(Boom), other:
            assert other.session is uow.session
            other.session.add(User(email="inner@example.com", name="inner"))
            other.session.flush()
            raise Boom
        assert len(log.matching("SAVEPOINT")) == 1  # the inner block is a savepoint
        with other:
            other.session.add(User(email="kept@example.com", name="kept"))
    assert committed_emails(db) == {"outer@example.com", "kept@example.com"}


def test_an_outer_exception_rolls_back_the_work_of_another_unit_of_work(
    db: Database, uow: AppUnitOfWork
) -> None:
    other = AppUnitOfWork(db)
    with pytest.raises(Boom), uow:
        add_user(uow, "outer@example.com")
        with other:
            assert other.session is uow.session
            add_user(other, "inner@example.com")
        raise Boom
    assert committed_emails(db) == set()


def test_an_integrity_error_in_a_nested_block_rolls_back_only_the_savepoint(
    db: Database, uow: AppUnitOfWork
) -> None:
    # The commonest reason a nested block fails: its flush hits a constraint. SQLAlchemy then
    # leaves the savepoint deactivated (not active, not closed); it must still be rolled back.
    with uow:
        add_user(uow, "ada@example.com")
        with pytest.raises(IntegrityError), uow:
            add_user(uow, "ada@example.com")
        add_user(uow, "bob@example.com")
    assert committed_emails(db) == {"ada@example.com", "bob@example.com"}


def test_an_error_when_a_nested_block_releases_rolls_back_only_the_savepoint(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        add_user(uow, "ada@example.com")
        with pytest.raises(IntegrityError), uow:
            # Not flushed: the violation surfaces when the block flushes before RELEASE.
            uow.session.add(User(email="ada@example.com", name="again"))
        add_user(uow, "bob@example.com")
    assert committed_emails(db) == {"ada@example.com", "bob@example.com"}


# -- uow.commit() ------------------------------------------------------------------------------


def test_commit_makes_the_work_so_far_visible_while_still_in_the_block(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        add_user(uow, "first@example.com")
        uow.commit()
        assert committed_emails(db) == {"first@example.com"}
        add_user(uow, "second@example.com")
    assert committed_emails(db) == {"first@example.com", "second@example.com"}


def test_commit_runs_the_callbacks_registered_so_far_only(db: Database, uow: AppUnitOfWork) -> None:
    calls: list[str] = []
    with uow:
        uow.on_commit(lambda: calls.append("before"))
        uow.commit()
        assert calls == ["before"]
        uow.on_commit(lambda: calls.append("after"))
        assert calls == ["before"]
    assert calls == ["before", "after"]


def test_work_after_commit_is_a_new_transaction_that_rolls_back_alone(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    with pytest.raises(Boom), uow:
        add_user(uow, "first@example.com")
        uow.commit()
        assert uow.session.in_transaction()
        add_user(uow, "second@example.com")
        uow.on_commit(lambda: calls.append("never"))
        raise Boom
    assert committed_emails(db) == {"first@example.com"}
    assert calls == []


def test_commit_inside_a_nested_block_raises(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        add_user(uow, "outer@example.com")
        with uow:
            add_user(uow, "inner@example.com")
            with pytest.raises(UnitOfWorkError, match="outermost"):
                uow.commit()
        # Nothing was committed by the refused call; the transaction goes on.
        assert uow.users.count() == 2
    assert committed_emails(db) == {"outer@example.com", "inner@example.com"}


# -- uow.rollback() ----------------------------------------------------------------------------


def test_rollback_in_the_outermost_block_discards_the_work_so_far_and_goes_on(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    with uow:
        add_user(uow, "discarded@example.com")
        uow.on_commit(lambda: calls.append("dropped"))
        uow.rollback()
        assert uow.users.count() == 0
        add_user(uow, "later@example.com")
        uow.on_commit(lambda: calls.append("kept"))
    assert committed_emails(db) == {"later@example.com"}
    assert calls == ["kept"]


def test_rollback_in_a_nested_block_rolls_back_to_the_savepoint_only(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        add_user(uow, "outer@example.com")
        with uow:
            add_user(uow, "discarded@example.com")
            uow.rollback()
            assert uow.users.count() == 1
            add_user(uow, "inner-later@example.com")
        add_user(uow, "outer-later@example.com")
    assert committed_emails(db) == {
        "outer@example.com",
        "inner-later@example.com",
        "outer-later@example.com",
    }


def test_rollback_in_a_nested_block_recovers_from_a_failed_flush(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        add_user(uow, "ada@example.com")
        with uow:
            with pytest.raises(IntegrityError):
                add_user(uow, "ada@example.com")
            uow.rollback()
            add_user(uow, "bob@example.com")
    assert committed_emails(db) == {"ada@example.com", "bob@example.com"}


# -- uow.set_rollback() ------------------------------------------------------------------------


def test_set_rollback_makes_a_clean_outermost_exit_roll_back(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    with uow:
        add_user(uow, "ada@example.com")
        uow.on_commit(lambda: calls.append("never"))
        uow.set_rollback(True)
    assert committed_emails(db) == set()
    assert calls == []


def test_set_rollback_in_a_nested_block_rolls_back_only_its_savepoint(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    with uow:
        add_user(uow, "outer@example.com")
        uow.on_commit(lambda: calls.append("outer"))
        with uow:
            add_user(uow, "inner@example.com")
            uow.on_commit(lambda: calls.append("inner"))
            uow.set_rollback(True)
        assert uow.users.count() == 1
    assert committed_emails(db) == {"outer@example.com"}
    assert calls == ["outer"]


def test_set_rollback_false_undoes_set_rollback_true(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        add_user(uow, "outer@example.com")
        with uow:
            add_user(uow, "inner@example.com")
            uow.set_rollback(True)
            uow.set_rollback(False)
        uow.set_rollback(True)
        uow.set_rollback(False)
    assert committed_emails(db) == {"outer@example.com", "inner@example.com"}


# -- misuse ------------------------------------------------------------------------------------

OUTSIDE_OPERATIONS: dict[str, Callable[[AppUnitOfWork], object]] = {
    "repository": lambda uow: uow.users,
    "session": lambda uow: uow.session,
    "on_commit": lambda uow: uow.on_commit(lambda: None),
    "commit": lambda uow: uow.commit(),
    "rollback": lambda uow: uow.rollback(),
    "set_rollback": lambda uow: uow.set_rollback(True),
}


@pytest.mark.parametrize("operation", list(OUTSIDE_OPERATIONS))
def test_using_the_unit_of_work_outside_a_block_raises_and_says_use_with_uow(
    uow: AppUnitOfWork, operation: str
) -> None:
    with pytest.raises(UnitOfWorkError, match="with uow:"):
        OUTSIDE_OPERATIONS[operation](uow)  # before any block
    with uow:
        OUTSIDE_OPERATIONS[operation](uow)  # fine inside
    with pytest.raises(UnitOfWorkError, match="with uow:"):
        OUTSIDE_OPERATIONS[operation](uow)  # and refused again once the block has closed


def test_an_unknown_attribute_raises_attribute_error(uow: AppUnitOfWork) -> None:
    with pytest.raises(AttributeError, match="no_such_repository"):
        _ = uow.no_such_repository
    with uow:
        with pytest.raises(AttributeError, match="no_such_repository"):
            _ = uow.no_such_repository
        assert not hasattr(uow, "no_such_repository")


# -- repository attributes ---------------------------------------------------------------------


@pytest.mark.sync_only(reason="checks the sync repository class")
def test_a_repository_attribute_is_bound_to_the_session_and_one_object_in_nested_blocks(
    uow: AppUnitOfWork,
) -> None:
    with uow:
        users = uow.users
        assert isinstance(users, UserRepository)
        assert users.session is uow.session
        assert users.model is User
        assert uow.users is users
        with uow:
            assert uow.users is users
            with uow:
                assert uow.users is users
        assert uow.users is users


def test_the_next_block_gets_a_new_repository_on_its_new_session(uow: AppUnitOfWork) -> None:
    with uow:
        first = uow.users
    with uow:
        second = uow.users
        assert second is not first
        assert second.session is uow.session
        assert first.session is not uow.session


@pytest.mark.sync_only(reason="checks the sync repository class")
def test_a_generic_repository_attribute_gets_its_model_from_the_type_parameter(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        posts = uow.posts
        assert isinstance(posts, Repository)
        assert posts.model is Post
        assert posts.session is uow.session
        author = add_user(uow, "ada@example.com")
        posts.create(title="Hello", author_id=author.id)
    with db.Session() as other:
        assert list(other.scalars(select(Post.title))) == ["Hello"]


# -- annotated attributes that are not repositories --------------------------------------------


class LabelledUnitOfWork(UnitOfWork):
    users: UserRepository
    label: str  # not a repository: set on the instance

    def __init__(self, database: Database, label: str) -> None:
        super().__init__(database)
        self.label = label


def test_a_non_repository_annotation_set_on_the_instance_reads_back() -> None:
    uow = LabelledUnitOfWork(Database("sqlite://"), "orders")
    assert uow.label == "orders"


def test_an_unset_non_repository_annotation_raises_attribute_error() -> None:
    class Unset(UnitOfWork):
        note: int

    with pytest.raises(AttributeError, match="note"):
        _ = Unset(Database("sqlite://")).note


def test_a_repository_attribute_outside_a_block_says_to_use_with_uow() -> None:
    uow = LabelledUnitOfWork(Database("sqlite://"), "x")
    with pytest.raises(UnitOfWorkError, match="with uow:"):
        _ = uow.users


# -- failure handling --------------------------------------------------------------------------


def test_a_failed_rollback_never_hides_the_original_exception(
    db: Database,
    uow: AppUnitOfWork,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = Boom("the original failure")

    def broken_rollback() -> None:
        raise RuntimeError("rollback failed too")

    with caplog.at_level(logging.ERROR, logger="uow"), pytest.raises(Boom) as caught:
        with uow:
            session = db.s()
            add_user(uow, "ada@example.com")
            monkeypatch.setattr(session, "rollback", broken_rollback)
            raise error
    assert caught.value is error
    records = [r for r in caplog.records if r.name == "uow"]
    assert len(records) == 1
    assert "rollback failed" in records[0].getMessage()
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)
    # The session was still closed and removed, which discarded the uncommitted work.
    assert not uow.in_block
    assert db.s() is not session
    assert committed_emails(db) == set()
    with uow:
        add_user(uow, "bob@example.com")
    assert committed_emails(db) == {"bob@example.com"}


def test_an_error_at_commit_time_propagates_and_nothing_is_committed(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    with pytest.raises(IntegrityError), uow:
        add_user(uow, "flushed@example.com")
        session = uow.session
        # Not flushed: the unique violation only surfaces when the commit flushes.
        session.add(User(email="twice@example.com", name="one"))
        session.add(User(email="twice@example.com", name="two"))
        uow.on_commit(lambda: calls.append("never"))
    assert calls == []
    assert not uow.in_block
    assert not session.in_transaction()
    assert db.s() is not session
    assert committed_emails(db) == set()
    with uow:
        add_user(uow, "next@example.com")
    assert committed_emails(db) == {"next@example.com"}


# -- threads -----------------------------------------------------------------------------------


@pytest.mark.sync_only(reason="threads on the sync Database")
def test_one_unit_of_work_shared_by_threads_gives_each_thread_its_own_transaction(
    db: Database, uow: AppUnitOfWork, backend: str
) -> None:
    workers = 4
    entered = threading.Barrier(workers, timeout=30)
    inserted = threading.Barrier(workers, timeout=30)
    counted = threading.Barrier(workers, timeout=30)
    sessions: list[object] = [None] * workers
    own_counts: list[int | None] = [None] * workers
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            assert not uow.in_block  # a new thread starts outside any block
            with uow:
                sessions[index] = uow.session
                assert uow.session is db.s()
                entered.wait()  # every thread is inside its own block at once
                add_user(uow, f"worker{index}@example.com")
                if backend == "postgresql":
                    # All four transactions hold an uncommitted row at the same time; each sees
                    # only its own. (SQLite serialises writers on its lock, so it cannot wait
                    # here: the others are queued at BEGIN IMMEDIATE.)
                    inserted.wait()
                own_counts[index] = uow.users.count()
                if backend == "postgresql":
                    counted.wait()  # nobody commits before everyone has counted
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            for barrier in (entered, inserted, counted):
                barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len({id(session) for session in sessions}) == workers
    if backend == "postgresql":
        assert own_counts == [1] * workers
    assert committed_emails(db) == {f"worker{i}@example.com" for i in range(workers)}
