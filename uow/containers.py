"""`DatabaseContainer` and `AsyncDatabaseContainer`: the dependency-injector containers that build
a Database (or an AsyncDatabase) and dispose of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dependency_injector import containers, providers

from uow.settings import DatabaseSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

    from sqlalchemy.ext.asyncio import async_sessionmaker
    from sqlalchemy.orm import sessionmaker

    from uow.async_database import AsyncDatabase
    from uow.async_session import AsyncSession
    from uow.database import Database
    from uow.session import Session

__all__ = ["AsyncDatabaseContainer", "DatabaseContainer"]


def _load_settings(overrides: Mapping[str, Any] | None) -> DatabaseSettings:
    # Runs on first use of the container, never at import: the environment is read then.
    return DatabaseSettings(**dict(overrides or {}))


def _open_database(settings: DatabaseSettings) -> Iterator[Database]:
    database = settings.create_database()
    try:
        yield database
    finally:
        database.dispose()


def _session_factory(database: Database) -> sessionmaker[Session]:
    return database.Session


class DatabaseContainer(containers.DeclarativeContainer):
    """One Database, configured from `DATABASE_*` variables and disposed at shutdown.

    Providers:

    - `config`: values that win over the environment, keyed by
      [`DatabaseSettings`][uow.settings.DatabaseSettings] field (`container.config.url.from_value(
      "sqlite:///test.db")`, `container.config.from_dict({...})`); empty by default.
    - `settings`: the `DatabaseSettings` built from `config` and the environment, once, on first
      use (a Singleton). Nothing is read at import or when the container is created.
    - `database`: the [`Database`][uow.Database] (a Resource). The first call creates it (no
      connection is opened until a query); `shutdown_resources()` disposes its engine.
    - `session_factory`: the Database's sessionmaker (`database.Session`), for code that wants
      plain sessions.

    Compose it into your application's container and build your unit of work on `database`:

    ```python
    class Container(containers.DeclarativeContainer):
        db = providers.Container(DatabaseContainer)
        uow = providers.Singleton(AppUnitOfWork, db.database)
        user_service = providers.Factory(UserService, uow=uow)
    ```

    To mypy, `container.db.database` is a `Provider[Any]` (dependency-injector types a composed
    container's attributes no better); `container.db.container` is this container, typed, so
    `container.db.container.database()` is a [`Database`][uow.Database]. Both spellings name
    one provider.

    Tests swap the database: `container.db.database.override(providers.Object(test_db))`.
    """

    config = providers.Configuration()
    settings = providers.Singleton(_load_settings, config)
    database = providers.Resource(_open_database, settings)
    session_factory = providers.Callable(_session_factory, database)


async def _open_async_database(settings: DatabaseSettings) -> AsyncIterator[AsyncDatabase]:
    database = settings.create_async_database()
    try:
        yield database
    finally:
        await database.dispose()


def _async_session_factory(database: AsyncDatabase) -> async_sessionmaker[AsyncSession]:
    return database.Session


class AsyncDatabaseContainer(containers.DeclarativeContainer):
    """One [`AsyncDatabase`][uow.AsyncDatabase], configured from `DATABASE_*` variables and
    disposed (awaited) at shutdown.

    The same settings as [`DatabaseContainer`][uow.containers.DatabaseContainer]; the URL's
    driver must be async (`postgresql+asyncpg://`, `postgresql+psycopg://`,
    `sqlite+aiosqlite://`; a driverless `sqlite://` URL gets aiosqlite), else the first use
    raises [`SettingsError`][uow.settings.SettingsError] naming `DATABASE_URL`.

    Providers:

    - `config`: values that win over the environment, keyed by
      [`DatabaseSettings`][uow.settings.DatabaseSettings] field; empty by default.
    - `settings`: the `DatabaseSettings` built from `config` and the environment, once, on first
      use (a Singleton). Nothing is read at import or when the container is created.
    - `async_database`: the `AsyncDatabase` (an async Resource). Its first use creates it (no
      connection is opened until a query) and is awaited: `await container.async_database()`
      (typed: `await container.async_database.async_()`); dependency-injector's `@inject`
      awaits it for an `async def`. `await container.shutdown_resources()` disposes its engine.
    - `session_factory`: the AsyncDatabase's `async_sessionmaker` (`async_database.Session`),
      for code that wants plain sessions; awaited like `async_database`.

    Everything built on `async_database` is awaited too (dependency-injector's async mode): a
    unit of work is `await container.uow()`, or injected into an `async def` endpoint:

    ```python
    class Container(containers.DeclarativeContainer):
        db = providers.Container(AsyncDatabaseContainer)
        uow = providers.Singleton(AppUnitOfWork, db.async_database)  # an AsyncUnitOfWork
        user_service = providers.Factory(UserService, uow=uow)
    ```

    Tests swap the database: `container.db.async_database.override(providers.Object(test_adb))`.
    An object is not awaitable: while it overrides, the providers return their values as they
    are (`@inject` takes either), unless `container.db.async_database.enable_async_mode()` was
    called, which keeps every call awaitable. The container never disposes an overriding
    AsyncDatabase: the test does, on its event loop.
    """

    config = providers.Configuration()
    settings = providers.Singleton(_load_settings, config)
    async_database = providers.Resource(_open_async_database, settings)
    session_factory = providers.Callable(_async_session_factory, async_database)
