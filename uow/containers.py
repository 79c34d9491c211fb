"""`DatabaseContainer`: the dependency-injector container that builds and disposes a Database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dependency_injector import containers, providers

from uow.settings import DatabaseSettings

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from sqlalchemy.orm import sessionmaker

    from uow.database import Database
    from uow.session import Session

__all__ = ["DatabaseContainer"]


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
