"""The Flask integration through Flask's real test client, on SQLite and PostgreSQL.

The test client runs the view in the test's own thread and context, so a session the view opens
through `db.s` is the test's context-local session: without `init_app` it is still there (and
its connection still checked out) after the request. Every view records the session it used, so
the tests can check that it was closed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dependency_injector import providers
from flask import Flask
from sqlalchemy import func, select

from tests.models import AppUnitOfWork, User
from uow import Database, Session
from uow.containers import DatabaseContainer
from uow.integrations.flask import init_app


class Boom(Exception):
    """The application error the failing views raise."""


def committed_emails(db: Database) -> list[str]:
    with db.Session() as fresh:
        return list(fresh.scalars(select(User.email).order_by(User.email)))


def read(db: Database, sessions: list[Session]) -> dict[str, int]:
    """A view's body: read through `db.s` outside any unit of work; record the session."""
    users = db.s.execute(select(func.count()).select_from(User)).scalar_one()
    sessions.append(db.s())
    return {"users": users, "checked_out": db.engine.pool.checkedout()}


def make_app(db: Database, sessions: list[Session]) -> Flask:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    uow = AppUnitOfWork(db)

    @app.get("/read")
    def read_view() -> dict[str, int]:
        return read(db, sessions)

    @app.get("/fail")
    def fail_view() -> None:
        read(db, sessions)
        raise Boom

    @app.post("/users/<email>")
    def create_user(email: str) -> dict[str, int]:
        with uow:
            user = uow.users.create(email=email, name="Ada")
            sessions.append(uow.session)
        return {"id": user.id}

    @app.post("/users-fail/<email>")
    def create_user_then_fail(email: str) -> None:
        with uow:
            uow.users.create(email=email, name="Bob")
            sessions.append(uow.session)
            raise Boom

    return app


def assert_all_removed(db: Database, sessions: list[Session]) -> None:
    assert sessions
    assert [session for session in sessions if session.in_transaction()] == []
    assert not db.s.registry.has()
    assert db.engine.pool.checkedout() == 0


# -- sessions are removed after every request --------------------------------------------------


def test_a_view_reading_through_db_s_leaves_no_session_after_the_request(db: Database) -> None:
    sessions: list[Session] = []
    app = make_app(db, sessions)
    init_app(app, db)

    response = app.test_client().get("/read")

    assert response.status_code == 200
    assert response.get_json() == {"users": 0, "checked_out": 1}
    assert len(sessions) == 1
    assert_all_removed(db, sessions)


def test_a_view_that_raises_leaves_no_session_after_the_request(db: Database) -> None:
    sessions: list[Session] = []
    app = make_app(db, sessions)
    init_app(app, db)

    response = app.test_client().get("/fail")

    assert response.status_code == 500
    assert len(sessions) == 1
    assert_all_removed(db, sessions)


def test_two_hundred_mixed_requests_leave_no_connection_checked_out(db: Database) -> None:
    sessions: list[Session] = []
    app = make_app(db, sessions)
    init_app(app, db)
    client = app.test_client()

    statuses = [client.get("/read" if number % 3 else "/fail").status_code for number in range(200)]

    assert statuses.count(200) == 133
    assert statuses.count(500) == 67
    assert len(sessions) == 200
    assert_all_removed(db, sessions)


def test_without_init_app_the_views_session_stays_open_after_the_request(db: Database) -> None:
    """The control: the checks above can fail. The leftover session is removed by hand."""
    sessions: list[Session] = []
    app = make_app(db, sessions)
    try:
        assert app.test_client().get("/read").status_code == 200
        assert db.s.registry.has()
        assert db.s() is sessions[0]
        assert sessions[0].in_transaction()
        assert db.engine.pool.checkedout() == 1
    finally:
        db.s.remove()
    assert db.engine.pool.checkedout() == 0


def test_the_session_is_removed_when_an_app_context_ends_outside_a_request(
    db: Database,
) -> None:
    app = Flask(__name__)
    init_app(app, db)
    with app.app_context():
        session = db.s()
        session.execute(select(1))
        assert db.engine.pool.checkedout() == 1
    assert not session.in_transaction()
    assert not db.s.registry.has()
    assert db.engine.pool.checkedout() == 0


# -- units of work in views --------------------------------------------------------------------


def test_a_view_writing_in_a_unit_of_work_commits(db: Database) -> None:
    sessions: list[Session] = []
    app = make_app(db, sessions)
    init_app(app, db)

    response = app.test_client().post("/users/ada@example.com")

    assert response.status_code == 200
    assert isinstance(response.get_json()["id"], int)
    assert committed_emails(db) == ["ada@example.com"]
    assert_all_removed(db, sessions)


def test_a_view_raising_in_a_unit_of_work_rolls_back(db: Database) -> None:
    sessions: list[Session] = []
    app = make_app(db, sessions)
    init_app(app, db)
    client = app.test_client()

    assert client.post("/users/ada@example.com").status_code == 200
    assert client.post("/users-fail/bob@example.com").status_code == 500

    assert len(sessions) == 2
    assert committed_emails(db) == ["ada@example.com"]
    assert_all_removed(db, sessions)


# -- database sources --------------------------------------------------------------------------


def test_init_app_resolves_a_provider_at_each_teardown(db: Database, tmp_path: Path) -> None:
    """The provider is overridden only after `init_app`, then pointed at another database."""
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    container = DatabaseContainer()
    app = Flask(__name__)
    init_app(app, container.database)
    current: list[Database] = []
    sessions: list[Session] = []

    @app.get("/ping")
    def ping() -> dict[str, int]:
        database = current[-1]
        value = database.s.execute(select(1)).scalar_one()
        sessions.append(database.s())
        return {"value": value}

    client = app.test_client()
    try:
        for database in (db, other):
            with container.database.override(providers.Object(database)):
                current.append(database)
                assert client.get("/ping").get_json() == {"value": 1}
                assert not database.s.registry.has()
                assert database.engine.pool.checkedout() == 0
        assert [session.in_transaction() for session in sessions] == [False, False]
    finally:
        other.s.remove()
        other.dispose()


def test_init_app_accepts_a_plain_callable_returning_the_database(db: Database) -> None:
    sessions: list[Session] = []
    app = make_app(db, sessions)
    calls: list[Database] = []

    def get_database() -> Database:
        calls.append(db)
        return db

    init_app(app, get_database)
    assert calls == []

    assert app.test_client().get("/read").status_code == 200

    assert calls == [db]
    assert_all_removed(db, sessions)


def test_init_app_records_its_database_sources_in_app_extensions(
    db: Database, tmp_path: Path
) -> None:
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    container = DatabaseContainer()
    app = Flask(__name__)

    init_app(app, db)
    init_app(app, other, container.database)

    sources = app.extensions["uow"]
    assert len(sources) == 3
    assert sources[0] is db
    assert sources[1] is other
    assert sources[2] is container.database


@pytest.mark.parametrize("databases", [0, 2])
def test_init_app_removes_the_session_of_every_database_it_was_given(
    db: Database, tmp_path: Path, databases: int
) -> None:
    other = Database(f"sqlite:///{tmp_path / 'other.db'}")
    app = Flask(__name__)
    init_app(app, *[db, other][:databases])
    sessions: list[Session] = []

    @app.get("/both")
    def both() -> str:
        for database in (db, other):
            database.s.execute(select(1))
            sessions.append(database.s())
        return "ok"

    try:
        assert app.test_client().get("/both").status_code == 200
        left_open = [session.in_transaction() for session in sessions]
        assert left_open == ([False, False] if databases else [True, True])
    finally:
        db.s.remove()
        other.s.remove()
        other.dispose()
