"""The async application container: AsyncDatabaseContainer, the async unit of work, the services."""

from __future__ import annotations

from dependency_injector import containers, providers

from uow.containers import AsyncDatabaseContainer

from .async_repositories import AsyncBlogUnitOfWork
from .async_services import AsyncPostService, AsyncUserService
from .models import Base


class AsyncContainer(containers.DeclarativeContainer):
    """Composes `AsyncDatabaseContainer` (configured from `DATABASE_URL` etc. on first use; the
    URL's driver must be async: `postgresql+asyncpg://`, `postgresql+psycopg://`, `sqlite://`).

    Its database is an async resource: `await container.db.async_database()`, and everything
    built on it is awaited too (`@inject` does it for `async def` endpoints). Tests override the
    database: `container.db.async_database.override(providers.Object(test_adb))`.
    """

    db = providers.Container(AsyncDatabaseContainer)
    # A Singleton is right: the transaction belongs to the (context, database) pair, not to
    # the unit of work object, so one AsyncBlogUnitOfWork serves every request and task.
    uow = providers.Singleton(AsyncBlogUnitOfWork, db.async_database)
    user_service = providers.Factory(AsyncUserService, uow=uow)
    post_service = providers.Factory(AsyncPostService, uow=uow)


async def create_tables(container: AsyncContainer) -> None:
    """Create the blog's tables in the container's database (an example's shortcut for
    migrations)."""
    database = await container.db.container.async_database.async_()
    await database.create_all(Base.metadata)
