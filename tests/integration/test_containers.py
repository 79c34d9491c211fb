"""DatabaseContainer: lazy settings, one disposed Database, composition, wiring and overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject
from sqlalchemy import event, select, text
from sqlalchemy.pool import QueuePool

from tests.models import AppUnitOfWork, Base, User
from uow import Database
from uow.containers import DatabaseContainer
from uow.settings import SettingsError

BAD_URL = "not a url at all"


class UserService:
    """A small application service: all it knows is its unit of work."""

    def __init__(self, uow: AppUnitOfWork) -> None:
        self.uow = uow

    def register(self, email: str) -> int:
        with self.uow:
            return self.uow.users.create(email=email, name=email.split("@")[0]).id


class AppContainer(containers.DeclarativeContainer):
    db = providers.Container(DatabaseContainer)
    uow = providers.Factory(AppUnitOfWork, db.database)
    user_service = providers.Factory(UserService, uow=uow)


@inject
def register_user(email: str, service: UserService = Provide[AppContainer.user_service]) -> int:
    return service.register(email)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `DATABASE_*` variable of the real environment (any case) reaches a test."""
    for name in list(os.environ):
        if name.upper().startswith("DATABASE_"):
            monkeypatch.delenv(name)


def url_of(db: Database) -> str:
    return db.url.render_as_string(hide_password=False)


def queue_pool(db: Database) -> QueuePool:
    """The engine's current pool: a QueuePool for file SQLite and for PostgreSQL."""
    pool = db.engine.pool
    assert isinstance(pool, QueuePool)
    return pool


def emails(db: Database) -> set[str]:
    """The user emails committed to `db`, read by a brand-new session."""
    with db.Session() as session:
        return set(session.scalars(select(User.email)))


@pytest.fixture
def container(db: Database) -> Iterator[DatabaseContainer]:
    """A DatabaseContainer configured for the test database; its resources shut down after."""
    database_container = DatabaseContainer()
    database_container.config.url.from_value(url_of(db))
    try:
        yield database_container
    finally:
        database_container.shutdown_resources()


@pytest.fixture
def app(db: Database) -> Iterator[AppContainer]:
    """The application container on the test database, wired into this module."""
    app_container = AppContainer()
    app_container.db.config.url.from_value(url_of(db))
    app_container.wire(modules=[__name__])
    try:
        yield app_container
    finally:
        app_container.unwire()
        app_container.shutdown_resources()


@pytest.fixture
def other_db(tmp_path: Path) -> Iterator[Database]:
    """A second database (a SQLite file) with the test tables: the one an override replaces."""
    database = Database(f"sqlite:///{tmp_path / 'other.db'}")
    database.create_all(Base.metadata)
    try:
        yield database
    finally:
        database.dispose()


# -- nothing happens until first use -----------------------------------------------------------


def test_importing_and_creating_the_container_reads_no_environment() -> None:
    code = (
        "from uow.containers import DatabaseContainer\n"
        "from uow.settings import SettingsError\n"
        "container = DatabaseContainer()\n"
        "assert not container.database.initialized\n"
        "print('created')\n"
        "try:\n"
        "    container.database()\n"
        "except SettingsError as error:\n"
        "    print(type(error).__name__, 'DATABASE_POOL_SIZE' in str(error))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DATABASE_")}
    env["DATABASE_POOL_SIZE"] = "not a number"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == ["created", "SettingsError True", ""]


def test_creating_the_container_builds_no_database_and_database_raises_on_first_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", BAD_URL)
    container = DatabaseContainer()
    assert not container.database.initialized
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        container.database()
    assert not container.database.initialized
    # Nothing was cached by the failure: the environment is read again on the next call.
    good_url = f"sqlite:///{tmp_path / 'fixed.db'}"
    monkeypatch.setenv("DATABASE_URL", good_url)
    try:
        assert container.database().url.database == str(tmp_path / "fixed.db")
    finally:
        container.shutdown_resources()


def test_config_values_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "2")
    monkeypatch.setenv("DATABASE_ECHO", "true")
    container = DatabaseContainer()
    container.config.from_dict({"pool_size": 6})
    container.config.url.from_value(f"sqlite:///{tmp_path / 'config.db'}")
    try:
        settings = container.settings()
        assert (settings.url, settings.pool_size) == (f"sqlite:///{tmp_path / 'config.db'}", 6)
        assert settings.echo is True  # not in config: still from the environment
        database = container.database()
        assert database.url.database == str(tmp_path / "config.db")
        assert queue_pool(database).size() == 6
    finally:
        container.shutdown_resources()


# -- the Database and its sessions -------------------------------------------------------------


def test_database_is_one_database_built_from_the_settings(
    container: DatabaseContainer, db: Database
) -> None:
    container.config.expire_on_commit.from_value(True)
    database = container.database()
    assert isinstance(database, Database)
    assert database is container.database()
    assert database is not db
    assert database.url == db.url
    assert database.Session.kw["expire_on_commit"] is True
    uow = AppUnitOfWork(database)
    with uow:
        uow.users.create(email="ada@example.com", name="Ada")
    assert emails(db) == {"ada@example.com"}


def test_session_factory_is_the_databases_sessionmaker_and_makes_working_sessions(
    container: DatabaseContainer, db: Database
) -> None:
    factory = container.session_factory()
    assert factory is container.database().Session
    with factory() as session, session.begin():
        session.add(User(email="bob@example.com", name="Bob"))
    assert emails(db) == {"bob@example.com"}


def test_shutdown_resources_disposes_the_engine(container: DatabaseContainer) -> None:
    database = container.database()
    closed: list[object] = []

    def on_close(dbapi_connection: Any, _record: Any) -> None:
        closed.append(dbapi_connection)

    event.listen(database.engine, "close", on_close)
    with database.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert queue_pool(database).checkedin() == 1
    assert closed == []
    container.shutdown_resources()
    assert len(closed) == 1
    assert queue_pool(database).checkedin() == 0
    assert not container.database.initialized
    # A call after shutdown builds a fresh Database.
    assert container.database() is not database


# -- an application container ------------------------------------------------------------------


def test_a_wired_function_gets_a_service_writing_through_the_containers_database(
    app: AppContainer, db: Database
) -> None:
    new_id = register_user("ada@example.com")
    assert isinstance(new_id, int)
    assert emails(db) == {"ada@example.com"}
    service = app.user_service()
    assert isinstance(service, UserService)
    assert service.uow.database is app.db.database()


def test_overriding_database_redirects_the_service_and_reset_override_restores(
    app: AppContainer, db: Database, other_db: Database
) -> None:
    # `app` is configured for other_db; the test database `db` replaces it.
    app.db.config.url.from_value(url_of(other_db))
    app.db.database.override(providers.Object(db))
    register_user("ada@example.com")
    assert app.db.session_factory() is db.Session
    assert (emails(db), emails(other_db)) == ({"ada@example.com"}, set())

    app.db.database.reset_override()
    register_user("bob@example.com")
    assert app.db.session_factory() is not db.Session
    assert (emails(db), emails(other_db)) == ({"ada@example.com"}, {"bob@example.com"})


def test_the_typed_spelling_through_container_is_the_same_provider_and_sees_overrides(
    app: AppContainer, db: Database, other_db: Database
) -> None:
    # `app.db.container.database` is what the docs tell mypy users to write.
    assert app.db.container.database is app.db.database
    assert app.db.container.database() is app.db.database()
    with app.db.container.database.override(providers.Object(other_db)):
        assert app.db.database() is other_db
        assert register_user("ada@example.com")
    assert (emails(db), emails(other_db)) == (set(), {"ada@example.com"})
