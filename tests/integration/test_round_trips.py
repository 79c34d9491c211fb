"""Lazy BEGIN, counted where it happens: in PostgreSQL's statement log and SQLite's trace.

A block that has not written yet runs its statements without a server transaction; BEGIN goes
just before the first write. These tests read what the server received (tests/server_log.py),
not what SQLAlchemy's events saw: the BEGIN and COMMIT the library or the driver send by
themselves never pass through those events.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Integer, cast, create_engine, literal, select, text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from tests.conftest import postgres_url
from tests.integration.helpers import committed_emails
from tests.models import AppUnitOfWork, Base, User
from tests.server_log import (
    round_trips,
    server_statements,
    sqlite_statements,
    wire_database,
)
from uow import Database

SELECT_USER = "SELECT users.id, users.email, users.name, users.age FROM users"


def kinds(statements: list[str]) -> list[str]:
    """Each statement's first words, enough to tell them apart."""
    out = []
    for statement in statements:
        words = statement.split()
        first = " ".join(words[:2]) if words[0] in ("ROLLBACK", "RELEASE") else words[0]
        out.append(first + (" FOR UPDATE" if statement.endswith("FOR UPDATE") else ""))
    return out


# -- PostgreSQL ----------------------------------------------------------------------------------


def test_the_first_write_leaves_with_its_begin_in_one_round_trip(
    wired: tuple[Database, str],
) -> None:
    # psycopg's pipeline mode sends BEGIN and the first write together: a create and its commit
    # take 2 round trips, where SQLAlchemy's default (psycopg begins by itself) takes 3.
    db, _ = wired
    uow = AppUnitOfWork(db)
    with round_trips(db.engine) as trips, uow:
        uow.users.create(email="bob@example.com", name="Bob")
    assert trips.count == 2, trips.lines
    plain = create_engine(postgres_url())
    try:
        with round_trips(plain) as plain_trips, Session(plain) as session, session.begin():
            session.add(User(email="cy@example.com", name="Cy"))
    finally:
        plain.dispose()
    assert plain_trips.count == 3, plain_trips.lines
    assert committed_emails(db) == {"ada@example.com", "bob@example.com", "cy@example.com"}


def test_a_first_or_create_miss_takes_fewer_round_trips_than_sqlalchemy(
    wired: tuple[Database, str],
) -> None:
    db, _ = wired
    uow = AppUnitOfWork(db)
    with round_trips(db.engine) as trips, uow:
        uow.users.first_or_create(email="bob@example.com", defaults={"name": "Bob"})
    assert trips.count == 3, trips.lines  # SELECT; BEGIN + INSERT ... ON CONFLICT; COMMIT
    plain = create_engine(postgres_url())
    try:
        with round_trips(plain) as plain_trips, Session(plain) as session, session.begin():
            # The naive get-or-create users write without the library.
            found = session.scalars(select(User).filter_by(email="cy@example.com")).first()
            if found is None:
                session.add(User(email="cy@example.com", name="Cy"))
    finally:
        plain.dispose()
    assert plain_trips.count == 4, plain_trips.lines  # BEGIN; SELECT; INSERT; COMMIT


def test_a_failing_first_write_in_the_pipeline_leaves_the_block_usable(
    wired: tuple[Database, str],
) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        with pytest.raises(IntegrityError), uow:
            uow.users.create(email="ada@example.com", name="Twin")  # the block's first write
        uow.users.create(email="bob@example.com", name="Bob")
    assert kinds(sent) == [
        "BEGIN", "SAVEPOINT", "INSERT", "ROLLBACK TO", "RELEASE SAVEPOINT", "INSERT", "COMMIT"
    ]  # fmt: skip
    assert committed_emails(db) == {"ada@example.com", "bob@example.com"}


def test_a_read_only_get_sends_exactly_one_statement(wired: tuple[Database, str]) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        assert uow.users.get(1) is not None
    # No BEGIN, no COMMIT or ROLLBACK, no ping, no reset when the connection goes back.
    assert len(sent) == 1
    assert sent[0].startswith(f"{SELECT_USER} WHERE users.id = ")


def test_a_first_or_create_hit_sends_exactly_one_statement(wired: tuple[Database, str]) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        uow.users.first_or_create(email="ada@example.com", defaults={"name": "Other"})
    assert kinds(sent) == ["SELECT"]


def test_begin_goes_just_before_the_first_write_and_commit_ends_it(
    wired: tuple[Database, str],
) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        uow.users.count()
        uow.users.create(email="bob@example.com", name="Bob")
        uow.users.count()
    assert kinds(sent) == ["SELECT", "BEGIN", "INSERT", "SELECT", "COMMIT"]
    assert committed_emails(db) == {"ada@example.com", "bob@example.com"}


def test_update_or_create_begins_before_its_for_update_read(wired: tuple[Database, str]) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        uow.users.update_or_create(email="ada@example.com", defaults={"age": 36})
    # The SAVEPOINT stays even as the block's first write: the update is a flush, and a failed
    # flush outside one would leave the whole block unusable.
    assert kinds(sent) == [
        "BEGIN",
        "SAVEPOINT",
        "SELECT FOR UPDATE",
        "UPDATE",
        "RELEASE SAVEPOINT",
        "COMMIT",
    ]


def test_a_first_or_create_miss_sends_no_savepoint_when_it_is_the_first_write(
    wired: tuple[Database, str],
) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        uow.users.first_or_create(email="bob@example.com", defaults={"name": "Bob"})
    assert kinds(sent) == ["SELECT", "BEGIN", "INSERT", "COMMIT"]
    assert "ON CONFLICT DO NOTHING RETURNING" in sent[2]


def test_a_create_or_first_conflict_aborts_nothing(wired: tuple[Database, str]) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        found = uow.users.create_or_first(email="ada@example.com", defaults={"name": "Other"})
        assert found.name == "Ada"
    # The INSERT returns no row instead of an error; the winner is read. No SAVEPOINT, no
    # ROLLBACK TO: nothing failed.
    assert kinds(sent) == ["BEGIN", "INSERT", "SELECT", "COMMIT"]


def test_after_an_earlier_write_a_miss_keeps_its_savepoint(wired: tuple[Database, str]) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        uow.users.create(email="bob@example.com", name="Bob")
        uow.users.create_or_first(email="carl@example.com", defaults={"name": "Carl"})
    assert kinds(sent) == ["BEGIN", "INSERT", "SAVEPOINT", "INSERT", "RELEASE SAVEPOINT", "COMMIT"]


def test_a_block_that_raises_before_writing_sends_no_rollback(
    wired: tuple[Database, str],
) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, pytest.raises(KeyError), uow:
        uow.users.count()
        raise KeyError("application error")
    assert kinds(sent) == ["SELECT"]


def test_reads_before_the_first_write_see_each_commit_as_read_committed_does(
    wired: tuple[Database, str],
) -> None:
    db, _ = wired
    uow = AppUnitOfWork(db)
    with uow:
        assert uow.users.count() == 1
        with db.Session() as other, other.begin():
            other.add(User(email="bob@example.com", name="Bob"))
        assert uow.users.count() == 2  # as inside a READ COMMITTED transaction


def test_a_failed_read_before_the_first_write_leaves_the_block_usable(
    wired: tuple[Database, str],
) -> None:
    db, _ = wired
    uow = AppUnitOfWork(db)
    with uow:
        with pytest.raises(DataError):
            uow.session.execute(select(cast(literal("not a number"), Integer)))
        uow.users.create(email="bob@example.com", name="Bob")
    assert committed_emails(db) == {"ada@example.com", "bob@example.com"}


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_snapshot_isolation_begins_eagerly_and_keeps_its_snapshot(
    wired: tuple[Database, str], level: str
) -> None:
    seeded, _ = wired
    db, name = wire_database(isolation_level=level)
    assert not db.lazy_begin
    uow = AppUnitOfWork(db)
    try:
        with server_statements(name) as sent, uow:
            assert uow.users.count() == 1
            with seeded.Session() as other, other.begin():
                other.add(User(email="bob@example.com", name="Bob"))
            assert uow.users.count() == 1  # the snapshot taken by the first statement
        assert kinds(sent)[0] == "BEGIN"
    finally:
        db.dispose()


def test_lazy_begin_can_be_turned_off(wired: tuple[Database, str]) -> None:
    _, name = wire_database()
    eager = Database(postgres_url(), lazy_begin=False, engine_options=_named(name))
    try:
        with AppUnitOfWork(eager) as warm:  # connect first: the dialect's own queries
            warm.users.count()
        with server_statements(name) as sent, AppUnitOfWork(eager) as uow:
            uow.users.count()
        assert kinds(sent) == ["BEGIN", "SELECT", "COMMIT"]
    finally:
        eager.dispose()


def _named(name: str) -> dict[str, object]:
    return {"connect_args": {"application_name": name}}


# -- SQLite --------------------------------------------------------------------------------------


def test_sqlite_read_only_blocks_send_no_begin_and_take_no_lock(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'lazy.db'}")
    db.create_all(Base.metadata)
    db.dispose()
    uow = AppUnitOfWork(db)
    writer = sqlite3.connect(tmp_path / "lazy.db", timeout=0.1, isolation_level=None)
    try:
        with sqlite_statements(db) as sent:
            writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            with uow:
                assert uow.users.count() == 0  # would wait 30 s for the lock if it took it
            writer.execute("ROLLBACK")
            with uow:
                uow.users.create(email="ada@example.com", name="Ada")
        statements = [s for s in sent if not s.startswith("PRAGMA")]
        assert [s.split()[0] for s in statements] == ["SELECT", "BEGIN", "INSERT", "COMMIT"]
        assert statements[1] == "BEGIN IMMEDIATE"
    finally:
        writer.close()
        db.dispose()


def test_sqlite_lazy_begin_can_be_turned_off(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'eager.db'}", lazy_begin=False)
    db.create_all(Base.metadata)
    db.dispose()
    try:
        with sqlite_statements(db) as sent, AppUnitOfWork(db) as uow:
            uow.users.count()
        statements = [s for s in sent if not s.startswith("PRAGMA")]
        assert [s.split()[0] for s in statements] == ["BEGIN", "SELECT", "COMMIT"]
    finally:
        db.dispose()


def test_text_sql_counts_as_a_write(tmp_path: Path) -> None:
    # SQL text cannot be told apart from a write: it begins the transaction first.
    db = Database(f"sqlite:///{tmp_path / 'text.db'}")
    try:
        with sqlite_statements(db) as sent, AppUnitOfWork(db) as uow:
            uow.session.execute(text("SELECT 1"))
        assert [s.split()[0] for s in sent if not s.startswith("PRAGMA")] == [
            "BEGIN",
            "SELECT",
            "COMMIT",
        ]
    finally:
        db.dispose()
