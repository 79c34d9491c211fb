"""AsyncDatabaseContainer and DatabaseSettings.create_async_database, on SQLite and PostgreSQL.

The settings give an AsyncDatabase the options a Database gets; a URL whose driver is of the
wrong kind is a SettingsError naming `DATABASE_URL` before any engine exists. The container
builds one AsyncDatabase on first use (awaited), disposes it when its resources are shut down
(awaited), and composes into an application container whose units of work and services are
injected into `async def` functions.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.pool import QueuePool

from repositories import AsyncRepository
from tests.conftest import fresh_database
from tests.models import User
from uow import AsyncDatabase, AsyncUnitOfWork, Database, _begin
from uow.containers import AsyncDatabaseContainer, DatabaseContainer
from uow.settings import DatabaseSettings, SettingsError

ASYNC_DRIVERS = ("postgresql+asyncpg", "postgresql+psycopg", "sqlite+aiosqlite")


class AsyncAppUnitOfWork(AsyncUnitOfWork):
    users: AsyncRepository[User]


class UserService:
    def __init__(self, uow: AsyncAppUnitOfWork) -> None:
        self.uow = uow

    async def register(self, email: str) -> int:
        async with self.uow:
            return (await self.uow.users.create(email=email, name=email.split("@")[0])).id


class AppContainer(containers.DeclarativeContainer):
    db = providers.Container(AsyncDatabaseContainer)
    uow = providers.Singleton(AsyncAppUnitOfWork, db.async_database)
    user_service = providers.Factory(UserService, uow=uow)


@inject
async def register_user(
    email: str, service: UserService = Provide[AppContainer.user_service]
) -> int:
    return await service.register(email)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `DATABASE_*` variable of the real environment (any case) reaches a test."""
    for name in list(os.environ):
        if name.upper().startswith("DATABASE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def async_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh test database with the tables, with an async driver (asyncpg)."""
    with fresh_database(backend, tmp_path) as database:
        url = database.url.render_as_string(hide_password=False)
        if backend == "postgresql":
            url = url.replace("postgresql+psycopg://", "postgresql+asyncpg://")
        else:
            url = url.replace("sqlite://", "sqlite+aiosqlite://")
        yield url


@pytest.fixture
async def container(async_url: str) -> AsyncIterator[AsyncDatabaseContainer]:
    database_container = AsyncDatabaseContainer()
    database_container.config.url.from_value(async_url)
    try:
        yield database_container
    finally:
        await shut_down(database_container)


async def shut_down(container: containers.Container) -> None:
    result = container.shutdown_resources()
    if result is not None:
        await result


def sync_url(url: str) -> str:
    return url.replace("+asyncpg", "+psycopg").replace("+aiosqlite", "")


def committed_emails(url: str) -> set[str]:
    database = Database(sync_url(url))
    try:
        with database.Session() as session:
            return set(session.scalars(select(User.email)))
    finally:
        database.dispose()


def queue_pool(adb: AsyncDatabase) -> QueuePool:
    pool = adb.engine.pool
    assert isinstance(pool, QueuePool)
    return pool


# -- settings ----------------------------------------------------------------------------------


def test_a_driverless_sqlite_url_gets_aiosqlite_and_the_default_url_too() -> None:
    assert DatabaseSettings().create_async_database().url.drivername == "sqlite+aiosqlite"
    adb = DatabaseSettings(url="sqlite:///some.db").create_async_database()
    assert adb.url.render_as_string() == "sqlite+aiosqlite:///some.db"
    # The sync side is unchanged: the same settings still make a pysqlite Database.
    assert DatabaseSettings(url="sqlite:///some.db").create_database().url.drivername == "sqlite"


@pytest.mark.parametrize("driver", ASYNC_DRIVERS)
def test_a_url_with_an_async_driver_is_kept_as_written(driver: str) -> None:
    host = "///x.db" if driver.startswith("sqlite") else "//app:s3cret@db.example.com/app"
    adb = DatabaseSettings(url=f"{driver}:{host}").create_async_database()
    assert adb.url.render_as_string(hide_password=False) == f"{driver}:{host}"


def test_the_options_reach_the_async_database_as_they_reach_a_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://app:s3cret@db.example.com/app")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "7")
    monkeypatch.setenv("DATABASE_MAX_OVERFLOW", "3")
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "4.5")
    monkeypatch.setenv("DATABASE_ECHO", "true")
    monkeypatch.setenv("DATABASE_EXPIRE_ON_COMMIT", "true")
    monkeypatch.setenv("DATABASE_LAZY_BEGIN", "false")
    adb = DatabaseSettings().create_async_database()
    pool = queue_pool(adb)
    assert (pool.size(), pool._max_overflow, pool._timeout) == (7, 3, 4.5)
    assert adb.engine.echo is True
    assert adb.Session.kw["expire_on_commit"] is True
    assert adb.lazy_begin is False


async def test_the_sqlite_transaction_mode_reaches_the_async_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mode.db'}"
    adb = DatabaseSettings(url=url, sqlite_transaction_mode="exclusive").create_async_database()
    try:
        async with adb.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            assert raw.info[_begin.BEGIN_STATEMENT] == "BEGIN EXCLUSIVE"
    finally:
        await adb.dispose()


@pytest.mark.parametrize(
    "url", ["sqlite+pysqlite:///app.db", "sqlite+pysqlite://"], ids=["file", "memory"]
)
def test_a_sync_driver_for_an_async_database_names_the_variable_and_the_async_drivers(
    url: str,
) -> None:
    settings = DatabaseSettings(url=url)
    with pytest.raises(SettingsError) as caught:
        settings.create_async_database()
    message = str(caught.value)
    assert "DATABASE_URL" in message
    assert "'sqlite+pysqlite' is a sync driver" in message
    assert all(driver in message for driver in ASYNC_DRIVERS)


@pytest.mark.parametrize("driver", ["postgresql+asyncpg", "sqlite+aiosqlite"])
def test_an_async_driver_for_a_database_names_the_variable_and_create_async_database(
    driver: str,
) -> None:
    host = "///x.db" if driver.startswith("sqlite") else "//app:s3cret@db.example.com/app"
    with pytest.raises(SettingsError) as caught:
        DatabaseSettings(url=f"{driver}:{host}").create_database()
    message = str(caught.value)
    assert "DATABASE_URL" in message
    assert f"{driver!r} is an async driver" in message
    assert "create_async_database()" in message
    assert "s3cret" not in message


def test_psycopg_serves_both_faces() -> None:
    settings = DatabaseSettings(url="postgresql+psycopg://app@db.example.com/app")
    assert isinstance(settings.create_database(), Database)
    assert isinstance(settings.create_async_database(), AsyncDatabase)


async def test_the_async_database_from_settings_works_on_the_test_database(
    async_url: str,
) -> None:
    adb = DatabaseSettings(url=async_url).create_async_database()
    try:
        async with AsyncAppUnitOfWork(adb) as uow:
            await uow.users.create(email="ada@example.com", name="Ada")
        async with AsyncAppUnitOfWork(adb) as uow:
            assert await uow.users.count() == 1
    finally:
        await adb.dispose()
    assert committed_emails(async_url) == {"ada@example.com"}


# -- the container -----------------------------------------------------------------------------


def test_importing_and_creating_the_container_reads_no_environment() -> None:
    code = (
        "import asyncio\n"
        "from uow.containers import AsyncDatabaseContainer\n"
        "from uow.settings import SettingsError\n"
        "container = AsyncDatabaseContainer()\n"
        "assert not container.async_database.initialized\n"
        "print('created')\n"
        "async def main():\n"
        "    try:\n"
        "        await container.async_database()\n"
        "    except SettingsError as error:\n"
        "        print(str(error).splitlines()[1].strip())\n"
        "asyncio.run(main())\n"
    )
    environment = {**os.environ, "DATABASE_POOL_SIZE": "not a number"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[0] == "created"
    assert result.stdout.splitlines()[1].startswith("DATABASE_POOL_SIZE:")


async def test_the_async_database_comes_from_database_url_once_and_is_disposed_at_shutdown(
    async_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", async_url)
    container = AsyncDatabaseContainer()
    adb = await container.async_database()
    assert isinstance(adb, AsyncDatabase)
    assert adb.url.render_as_string(hide_password=False) == async_url
    assert await container.async_database() is adb
    assert (await container.session_factory()) is adb.Session
    assert isinstance(adb.Session, async_sessionmaker)

    async with AsyncAppUnitOfWork(adb) as uow:
        await uow.users.create(email="ada@example.com", name="Ada")
    pool = queue_pool(adb)
    assert pool.checkedin() == 1

    await shut_down(container)

    assert not container.async_database.initialized
    assert pool.checkedin() == 0  # the connections were closed, awaited
    assert adb.engine.pool is not pool
    assert committed_emails(async_url) == {"ada@example.com"}


async def test_config_wins_over_the_environment(
    container: AsyncDatabaseContainer, async_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///elsewhere.db")
    container.config.pool_pre_ping.from_value(True)
    adb = await container.async_database()
    assert adb.url.render_as_string(hide_password=False) == async_url
    assert adb.engine.pool._pre_ping is True


async def test_a_sync_url_fails_at_first_use_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite+pysqlite:///app.db")
    container = AsyncDatabaseContainer()
    with pytest.raises(SettingsError, match=r"DATABASE_URL: 'sqlite\+pysqlite' is a sync driver"):
        await container.async_database()
    assert not container.async_database.initialized


async def test_a_composed_container_injects_an_awaited_service_into_async_functions(
    async_url: str,
) -> None:
    app = AppContainer()
    app.db.config.url.from_value(async_url)
    app.wire(modules=[__name__])
    try:
        first = await register_user("ada@example.com")
        second = await register_user("grace@example.com")
        uow = await app.uow()
        assert uow is await app.uow()  # one unit of work serves every call
        assert uow.database is await app.db.async_database()
    finally:
        app.unwire()
        await shut_down(app)
    assert second == first + 1
    assert not app.db.async_database.initialized
    assert committed_emails(async_url) == {"ada@example.com", "grace@example.com"}


async def test_an_overriding_async_database_is_used_and_left_to_its_owner(
    async_url: str, tmp_path: Path
) -> None:
    test_adb = AsyncDatabase(async_url)
    app = AppContainer()
    app.db.config.url.from_value(f"sqlite+aiosqlite:///{tmp_path / 'never-used.db'}")
    app.db.async_database.override(providers.Object(test_adb))
    app.db.async_database.enable_async_mode()  # calls stay awaitable while an object overrides
    app.wire(modules=[__name__])
    try:
        await register_user("ada@example.com")
        assert (await app.uow()).database is test_adb
        pool = queue_pool(test_adb)
        assert pool.checkedin() == 1
        await shut_down(app)
        assert pool.checkedin() == 1  # the container did not dispose the test's database
    finally:
        app.unwire()
        await test_adb.dispose()
    assert not (tmp_path / "never-used.db").exists()
    assert committed_emails(async_url) == {"ada@example.com"}


async def test_the_sync_container_is_unchanged_beside_it(tmp_path: Path) -> None:
    sync_container = DatabaseContainer()
    sync_container.config.url.from_value(f"sqlite:///{tmp_path / 'sync.db'}")
    database = sync_container.database()  # not awaited: a plain Database
    assert isinstance(database, Database)
    assert sync_container.shutdown_resources() is None
    assert not sync_container.database.initialized


def test_an_async_url_in_the_sync_container_fails_at_first_use_naming_the_variable() -> None:
    sync_container = DatabaseContainer()
    sync_container.config.url.from_value("sqlite+aiosqlite:///app.db")
    with pytest.raises(SettingsError, match=r"DATABASE_URL: 'sqlite\+aiosqlite' is an async"):
        sync_container.database()
    assert not sync_container.database.initialized
