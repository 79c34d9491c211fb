"""What a block leaves behind: kept repositories, released savepoints, errors caught inside it.

Each test here started as a failing test for a defect found by outside test suites and fault
injection (issue 9): they run on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from repositories import Query
from tests.integration.helpers import Boom, add_user, committed_emails
from tests.models import AppUnitOfWork, User
from uow import Database, UnitOfWorkError
from uow.testing import count_statements

pytestmark = pytest.mark.both_faces

# -- a repository, query or session kept past its block -----------------------------------------

_KEPT_USES: dict[str, Callable[[Any], object]] = {
    "repository.all": lambda kept: kept["users"].all(),
    "repository.get": lambda kept: kept["users"].get(1),
    "repository.create": lambda kept: kept["users"].create(email="late@example.com", name="L"),
    "repository.first_or_create": lambda kept: kept["users"].first_or_create(
        email="late@example.com", defaults={"name": "L"}
    ),
    "query.count": lambda kept: kept["query"].count(),
    "query.iterator": lambda kept: list(kept["query"].iterator(10)),
    "query.update": lambda kept: kept["query"].update(name="x"),
    "session.execute": lambda kept: kept["session"].execute(select(User)).all(),
}


@pytest.mark.parametrize("use", _KEPT_USES.values(), ids=_KEPT_USES.keys())
def test_a_repository_query_or_session_used_after_its_block_raises_before_any_sql(
    db: Database, uow: AppUnitOfWork, use: Callable[[Any], object]
) -> None:
    with uow:
        add_user(uow, "ada@example.com")
        kept: dict[str, Any] = {
            "users": uow.users,
            "query": uow.users.filter(email="ada@example.com"),
            "session": uow.session,
        }
    with count_statements(db.engine) as log, pytest.raises(UnitOfWorkError, match="with uow:"):
        use(kept)
    assert log.statements == []
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # Nothing was left open: the next blocks work (on SQLite a leaked transaction would hold
    # the write lock and make them fail with "database is locked").
    with uow:
        add_user(uow, "bob@example.com")
    assert committed_emails(db) == {"ada@example.com", "bob@example.com"}


def test_a_kept_query_is_refined_without_sql_but_not_run(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        query: Query[User] = uow.users.filter(age__gte=18)
    refined = query.order_by("email")[:5]  # building a query runs nothing
    with pytest.raises(UnitOfWorkError):
        refined.all()


def test_the_next_block_gets_a_new_session_that_works(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        first = uow.session
    with uow:
        assert uow.session is not first
        add_user(uow, "ada@example.com")
    assert committed_emails(db) == {"ada@example.com"}


def test_plain_sessions_of_the_database_stay_reusable_after_close(db: Database) -> None:
    # Only sessions a unit of work ended are retired; `db.Session()` keeps SQLAlchemy's rules.
    session = db.Session()
    session.execute(select(User)).all()
    session.close()
    assert session.execute(select(User)).all() == []
    session.close()


# -- savepoints that roll back are released ----------------------------------------------------


def test_a_rolled_back_nested_block_releases_its_savepoint(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        add_user(uow, "outer@example.com")
        with count_statements(db.engine) as log:
            for _ in range(3):
                with pytest.raises(Boom), uow:
                    add_user(uow, "inner@example.com")
                    raise Boom
    # Each savepoint is rolled back and then released, so the next one does not nest inside it.
    kinds = [_savepoint_kind(s) for s in log.statements if "SAVEPOINT" in s.upper()]
    assert kinds == ["SAVEPOINT", "ROLLBACK TO", "RELEASE"] * 3
    assert committed_emails(db) == {"outer@example.com"}


def test_a_rolled_back_savepoint_no_longer_exists_on_the_server(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        with count_statements(db.engine) as log, pytest.raises(Boom), uow:
            add_user(uow, "inner@example.com")
            raise Boom
        name = log.matching("SAVEPOINT")[0].split()[-1]
        # Released: the server no longer knows the name. Asked inside a savepoint of its own,
        # so the error cannot abort the block on PostgreSQL.
        with pytest.raises(Exception, match=r"(?i)savepoint"), uow:
            uow.session.execute(text(f"RELEASE SAVEPOINT {name}"))
        add_user(uow, "after@example.com")
    assert committed_emails(db) == {"after@example.com"}


def test_a_failed_get_or_create_insert_releases_its_savepoint(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        bob = add_user(uow, "bob@example.com")  # earlier work the savepoint protects
        with count_statements(db.engine) as log, pytest.raises(IntegrityError):
            uow.posts.create_or_first(title="Orphan", author_id=bob.id + 1000)  # foreign key
    kinds = [_savepoint_kind(s) for s in log.statements if "SAVEPOINT" in s.upper()]
    assert kinds == ["SAVEPOINT", "ROLLBACK TO", "RELEASE"]


def _savepoint_kind(statement: str) -> str:
    words = statement.upper().split()
    if words[0] == "ROLLBACK":
        return "ROLLBACK TO"
    return words[0]


# -- a database error caught inside a block ----------------------------------------------------


def test_leaving_a_block_after_a_caught_flush_error_says_nothing_was_committed(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        add_user(uow, "ada@example.com")
    with pytest.raises(UnitOfWorkError, match="nothing was committed") as caught:
        with uow:
            add_user(uow, "bob@example.com")
            with pytest.raises(IntegrityError):
                add_user(uow, "ada@example.com")
    assert "nested `with uow:`" in str(caught.value)
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert committed_emails(db) == {"ada@example.com"}
    with uow:  # and the next block works
        add_user(uow, "carl@example.com")
    assert committed_emails(db) == {"ada@example.com", "carl@example.com"}


def test_leaving_a_block_after_a_caught_statement_error_commits_only_where_it_is_safe(
    db: Database, uow: AppUnitOfWork
) -> None:
    # Query.update runs a statement, not a flush: SQLAlchemy's transaction stays active, but
    # PostgreSQL's is aborted, and a COMMIT there is answered with a silent ROLLBACK.
    with uow:
        add_user(uow, "ada@example.com")
        add_user(uow, "bob@example.com")

    def block() -> None:
        with uow:
            add_user(uow, "carl@example.com")
            with pytest.raises(IntegrityError):
                uow.users.filter(email="bob@example.com").update(email="ada@example.com")

    if db.engine.dialect.name == "sqlite":
        block()  # SQLite undoes only the failed statement: the rest of the block commits
        assert committed_emails(db) == {"ada@example.com", "bob@example.com", "carl@example.com"}
        return
    with pytest.raises(UnitOfWorkError, match="nothing was committed") as caught:
        block()
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert committed_emails(db) == {"ada@example.com", "bob@example.com"}


def test_a_statement_error_inside_a_nested_block_does_not_poison_the_outer_one(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        add_user(uow, "ada@example.com")
        add_user(uow, "bob@example.com")
    with uow:
        with pytest.raises(IntegrityError), uow:
            uow.users.filter(email="bob@example.com").update(email="ada@example.com")
        add_user(uow, "carl@example.com")
    assert committed_emails(db) == {"ada@example.com", "bob@example.com", "carl@example.com"}


def test_a_nested_block_leaving_after_a_caught_statement_error_rolls_back_only_itself(
    db: Database, uow: AppUnitOfWork
) -> None:
    # The nested block catches the error and exits cleanly. On PostgreSQL its savepoint is
    # aborted: the exit must roll back to it and say so, and the outer block goes on.
    with uow:
        add_user(uow, "ada@example.com")
        add_user(uow, "bob@example.com")

    def nested_block() -> None:
        with uow:
            add_user(uow, "carl@example.com")
            with pytest.raises(IntegrityError):
                uow.users.filter(email="bob@example.com").update(email="ada@example.com")

    with uow:
        add_user(uow, "dora@example.com")
        if db.engine.dialect.name == "sqlite":
            nested_block()  # SQLite undoes only the failed statement: the savepoint commits
        else:
            with pytest.raises(UnitOfWorkError, match="rolled back") as caught:
                nested_block()
            assert isinstance(caught.value.__cause__, IntegrityError)
        add_user(uow, "eve@example.com")
    expected = {"ada@example.com", "bob@example.com", "dora@example.com", "eve@example.com"}
    if db.engine.dialect.name == "sqlite":
        expected.add("carl@example.com")
    assert committed_emails(db) == expected


@pytest.mark.postgres_only
def test_a_failed_commit_rolls_back_and_leaves_the_block_usable(
    db: Database, uow: AppUnitOfWork
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("deferred constraints are checked at COMMIT on PostgreSQL")
    with db.engine.begin() as connection:
        connection.execute(text("CREATE TABLE deferred (id int PRIMARY KEY, parent int)"))
        connection.execute(
            text(
                "ALTER TABLE deferred ADD FOREIGN KEY (parent) REFERENCES deferred (id) "
                "DEFERRABLE INITIALLY DEFERRED"
            )
        )
    calls: list[str] = []
    with uow:
        uow.on_commit(lambda: calls.append("lost"))
        uow.session.execute(text("INSERT INTO deferred VALUES (1, 99)"))
        with pytest.raises(IntegrityError):
            uow.commit()  # the foreign key is checked now, and fails
        # Rolled back, and a new transaction begun: the block goes on.
        assert uow.session.in_transaction()
        uow.session.execute(text("INSERT INTO deferred VALUES (2, NULL)"))
        uow.on_commit(lambda: calls.append("kept"))
    with db.Session() as session:
        rows = session.execute(text("SELECT id FROM deferred")).scalars().all()
    assert rows == [2]
    assert calls == ["kept"]
