"""The application container: the library's DatabaseContainer, the unit of work, the services."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dependency_injector import containers, providers

from uow.containers import DatabaseContainer

from .models import Base
from .repositories import BlogUnitOfWork
from .services import PostService, UserService

if TYPE_CHECKING:
    from collections.abc import Callable


class Container(containers.DeclarativeContainer):
    """Composes `DatabaseContainer` (configured from `DATABASE_URL` etc. on first use).

    Tests override the database: `container.db.database.override(providers.Object(test_db))`.
    """

    db = providers.Container(DatabaseContainer)
    # A Singleton is right: the transaction belongs to the (context, database) pair, not to
    # the UnitOfWork object, so one UnitOfWork serves every request and thread.
    uow = providers.Singleton(BlogUnitOfWork, db.database)
    # What to call with a new post's id after its commit: the worker example plugs a job in.
    welcome: providers.Provider[Callable[[int], object] | None] = providers.Object(None)
    user_service = providers.Factory(UserService, uow=uow)
    post_service = providers.Factory(PostService, uow=uow, welcome=welcome)


def create_tables(container: Container) -> None:
    """Create the blog's tables in the container's database (an example's shortcut for
    migrations)."""
    container.db.database().create_all(Base.metadata)
