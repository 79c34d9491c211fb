"""Database: options, the context-local session, SQLite set-up and fork safety."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import URL, make_url

from tests.integration.helpers import checkout_check
from tests.models import AppUnitOfWork, Base, User
from tests.server_log import sqlite_statements
from uow import Database, Session, UowError


def test_options_are_copied_and_never_mutated(tmp_path: Path) -> None:
    engine_options: dict[str, Any] = {"echo": False, "connect_args": {"timeout": 3}}
    session_options: dict[str, Any] = {"autoflush": True}
    before = (repr(engine_options), repr(session_options))
    db = Database(f"sqlite:///{tmp_path / 'a.db'}", engine_options, session_options)
    assert (repr(engine_options), repr(session_options)) == before
    assert db.Session.kw["autoflush"] is True
    db.dispose()


def test_sessions_do_not_expire_on_commit_by_default(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    assert db.Session.kw["expire_on_commit"] is False
    assert isinstance(db.Session(), Session)
    overridden = Database("sqlite://", session_options={"expire_on_commit": True})
    assert overridden.Session.kw["expire_on_commit"] is True


def test_db_s_is_the_same_session_within_a_context_and_remove_forgets_it(db: Database) -> None:
    first = db.s()
    assert db.s() is first
    db.s.remove()
    assert db.s() is not first


def test_each_thread_gets_its_own_session(db: Database) -> None:
    main_session = db.s()
    seen: list[Session] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()  # all threads hold their session at the same time
        seen.append(db.s())
        barrier.wait()
        db.s.remove()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(s) for s in seen}) == 4
    assert main_session not in seen


def test_asyncio_tasks_started_without_a_session_each_get_their_own(db: Database) -> None:
    async def grab(ready: asyncio.Barrier) -> Session:
        session = db.s()
        await ready.wait()  # every task holds its session before any returns
        return session

    async def main() -> list[Session]:
        ready = asyncio.Barrier(5)
        return list(await asyncio.gather(*(grab(ready) for _ in range(5))))

    sessions = asyncio.run(main())
    assert len({id(s) for s in sessions}) == 5


def test_a_task_created_inside_a_block_sees_the_blocks_session(db: Database) -> None:
    uow = AppUnitOfWork(db)

    async def main() -> tuple[Session, Session]:
        with uow:
            outer = uow.session
            inner = await asyncio.create_task(_current_session(db))
            return outer, inner

    outer, inner = asyncio.run(main())
    assert inner is outer


async def _current_session(db: Database) -> Session:
    return db.s()


def test_sqlite_savepoint_rollback_keeps_the_outer_work(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'sp.db'}")
    db.create_all(Base.metadata)
    with db.Session() as session, session.begin():
        session.add(User(email="outer@example.com", name="Outer"))
        savepoint = session.begin_nested()
        session.add(User(email="inner@example.com", name="Inner"))
        session.flush()
        savepoint.rollback()
    with db.Session() as session:
        emails = session.scalars(select(User.email)).all()
    assert emails == ["outer@example.com"]


def test_sqlite_file_databases_get_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_sqlite_transactions_begin_immediate_by_default_and_can_be_deferred(
    tmp_path: Path,
) -> None:
    immediate = Database(f"sqlite:///{tmp_path / 'immediate.db'}")
    deferred = Database(f"sqlite:///{tmp_path / 'deferred.db'}", sqlite_transaction_mode="DEFERRED")
    for db, expected in [(immediate, "BEGIN IMMEDIATE"), (deferred, "BEGIN")]:
        with sqlite_statements(db) as sent, db.Session() as session, session.begin():
            session.execute(text("CREATE TABLE t (x INTEGER)"))  # a write: BEGIN goes first
        assert sent[:3] == [expected, "CREATE TABLE t (x INTEGER)", "COMMIT"]
        db.dispose()


# -- fork safety ---------------------------------------------------------------------------------


def _backend_identity(db: Database) -> Any:
    """Something that tells database connections apart: the server pid on PostgreSQL."""
    with db.engine.connect() as connection:
        if db.engine.dialect.name == "postgresql":
            return connection.execute(text("SELECT pg_backend_pid()")).scalar()
        return id(connection.connection.dbapi_connection)


def _child(db: Database, results: Any) -> None:
    connects: list[int] = []
    event.listen(db.engine, "connect", lambda *_: connects.append(os.getpid()))
    uow = AppUnitOfWork(db)
    with uow:
        uow.users.create(email="child@example.com", name="Child")
    identity = _backend_identity(db)
    results.put((len(connects), identity))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_opens_its_own_connection_and_the_parent_keeps_its_own(
    db: Database,
) -> None:
    parent_identity = _backend_identity(db)  # leaves one connection pooled in the parent
    assert db.engine.pool.checkedin() == 1

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    process = context.Process(target=_child, args=(db, results))
    process.start()
    new_connections, child_identity = results.get(timeout=60)
    process.join(timeout=60)
    assert process.exitcode == 0

    assert new_connections >= 1  # the child did not reuse the inherited connection
    if db.engine.dialect.name == "postgresql":
        assert child_identity != parent_identity
    # The parent's pooled connection survived the child and is the one it gets back.
    assert _backend_identity(db) == parent_identity
    with db.Session() as session:
        assert session.scalars(select(User.email)).all() == ["child@example.com"]


def _report_block_state(db: Database, results: Any) -> None:
    results.put((db.in_unit_of_work, db.s.registry.has()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_child_forked_inside_a_block_starts_outside_any_block_with_no_session(
    db: Database,
) -> None:
    uow = AppUnitOfWork(db)
    assert not db.in_unit_of_work
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    with uow:
        assert db.in_unit_of_work
        assert uow.in_block
        process = context.Process(target=_report_block_state, args=(db, results))
        process.start()
        child_state = results.get(timeout=60)
        process.join(timeout=60)
    assert not db.in_unit_of_work
    assert process.exitcode == 0
    assert child_state == (False, False)


# -- issue 9: URLs as hosting providers hand them out; pre-ping for server databases --------------


@pytest.mark.parametrize(
    "url",
    [
        "postgres://app:s3cret@db.example.com/app",
        "postgresql://app:s3cret@db.example.com/app",
        make_url("postgres://app:s3cret@db.example.com/app"),
    ],
)
def test_a_postgresql_url_without_a_driver_gets_the_installed_driver(url: str | URL) -> None:
    db = Database(url)  # opens no connection
    assert db.url.drivername == "postgresql+psycopg"
    assert (db.url.username, db.url.password, db.url.host) == ("app", "s3cret", "db.example.com")
    db.dispose()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql+psycopg"])
def test_a_url_whose_driver_is_missing_raises_an_import_error_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    for name in ("psycopg", "psycopg2", "pg8000"):
        monkeypatch.setitem(sys.modules, name, None)  # as on a machine without them
    with pytest.raises(ImportError) as caught:
        Database(f"{scheme}://app:s3cret@db.example.com/app")
    assert isinstance(caught.value, UowError)
    message = str(caught.value)
    assert 'pip install "uow-repositories[postgres]"' in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        ("postgresql+psycopg://app@db.example.com/app", {}, "socket"),
        ("postgresql+psycopg://app@db.example.com/app", {"pool_pre_ping": True}, "ping"),
        ("postgresql+psycopg://app@db.example.com/app", {"pool_pre_ping": False}, "nothing"),
        ("sqlite:///app.db", {}, "nothing"),
        ("sqlite:///app.db", {"pool_pre_ping": True}, "ping"),
    ],
)
def test_server_databases_check_connections_at_checkout_unless_told_otherwise(
    url: str, options: dict[str, Any], expected: str
) -> None:
    db = Database(url, engine_options=options)  # opens no connection
    assert checkout_check(db) == expected
    db.dispose()
