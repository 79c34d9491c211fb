"""on_commit callbacks on real SQLite and PostgreSQL: when they run, in what order, failures."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from tests.integration.helpers import Boom, add_user, committed_emails
from tests.models import AppUnitOfWork
from uow import Database

pytestmark = [pytest.mark.both_faces, pytest.mark.through_pgbouncer]


def test_on_commit_callbacks_run_in_order_after_the_outermost_commit(
    db: Database, uow: AppUnitOfWork
) -> None:
    seen: list[tuple[str, set[str], bool]] = []

    def callback(name: str) -> Callable[[], None]:
        return lambda: seen.append((name, committed_emails(db), uow.in_block))

    with uow:
        add_user(uow, "ada@example.com")
        for name in ("first", "second", "third"):
            uow.on_commit(callback(name))
        assert seen == []
    assert seen == [(name, {"ada@example.com"}, False) for name in ("first", "second", "third")]


def test_on_commit_callbacks_do_not_run_when_the_block_raises(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    with pytest.raises(Boom), uow:
        add_user(uow, "ada@example.com")
        uow.on_commit(lambda: calls.append("never"))
        raise Boom
    assert calls == []


def test_on_commit_callbacks_do_not_run_after_set_rollback(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    with uow:
        uow.on_commit(lambda: calls.append("never"))
        with uow:
            uow.on_commit(lambda: calls.append("never either"))
        uow.set_rollback(True)
    assert calls == []


def test_callbacks_of_a_rolled_back_savepoint_are_dropped_while_outer_ones_run(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    with uow:
        uow.on_commit(lambda: calls.append("outer before"))
        with pytest.raises(Boom), uow:
            uow.on_commit(lambda: calls.append("inner"))
            with uow:
                uow.on_commit(lambda: calls.append("innermost, released into inner"))
            raise Boom
        uow.on_commit(lambda: calls.append("outer after"))
    assert calls == ["outer before", "outer after"]


def test_callbacks_of_a_released_savepoint_run_in_registration_order(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    with uow:
        uow.on_commit(lambda: calls.append("a"))
        with uow:
            uow.on_commit(lambda: calls.append("b"))
            with uow:
                uow.on_commit(lambda: calls.append("c"))
            assert calls == []
        uow.on_commit(lambda: calls.append("d"))
    assert calls == ["a", "b", "c", "d"]


def test_a_robust_callback_failure_is_logged_and_the_next_callback_runs(
    db: Database, uow: AppUnitOfWork, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def failing() -> None:
        raise Boom("callback failure")

    with caplog.at_level(logging.ERROR, logger="uow"):
        with uow:
            add_user(uow, "ada@example.com")
            uow.on_commit(failing, robust=True)
            uow.on_commit(lambda: calls.append("next"))
    assert calls == ["next"]
    assert committed_emails(db) == {"ada@example.com"}
    records = [r for r in caplog.records if r.name == "uow"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], Boom)


def test_a_non_robust_callback_failure_propagates_skips_the_rest_and_keeps_the_data(
    db: Database, uow: AppUnitOfWork
) -> None:
    calls: list[str] = []
    error = Boom("callback failure")

    def failing() -> None:
        calls.append("failing")
        raise error

    with pytest.raises(Boom) as caught:
        with uow:
            add_user(uow, "ada@example.com")
            uow.on_commit(lambda: calls.append("first"))
            uow.on_commit(failing)
            uow.on_commit(lambda: calls.append("skipped"))
    assert caught.value is error
    assert calls == ["first", "failing"]
    assert committed_emails(db) == {"ada@example.com"}
    assert not uow.in_block


def test_a_callback_can_open_its_own_unit_of_work(db: Database, uow: AppUnitOfWork) -> None:
    sessions = []

    def follow_up() -> None:
        assert not uow.in_block
        with uow:
            sessions.append(uow.session)
            add_user(uow, "follow-up@example.com")

    with uow:
        sessions.append(uow.session)
        add_user(uow, "ada@example.com")
        uow.on_commit(follow_up)
    assert committed_emails(db) == {"ada@example.com", "follow-up@example.com"}
    assert len(sessions) == 2
    assert sessions[0] is not sessions[1]


@pytest.mark.parametrize("callback", [None, "send_mail", 42], ids=["None", "str", "int"])
def test_on_commit_refuses_what_cannot_be_called_when_it_is_registered(
    db: Database, uow: AppUnitOfWork, callback: object
) -> None:
    calls: list[str] = []
    with uow:
        uow.on_commit(lambda: calls.append("first"))
        with pytest.raises(TypeError, match="callable"):
            uow.on_commit(callback)  # type: ignore[arg-type]
        uow.on_commit(lambda: calls.append("second"))
        add_user(uow, "ada@example.com")
    assert calls == ["first", "second"]
    assert committed_emails(db) == {"ada@example.com"}
