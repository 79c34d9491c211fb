"""FastAPI (and any ASGI app): request-scoped sessions, engine disposal at shutdown, and the
HTTP answers to the library's errors.

```python
app = FastAPI(lifespan=lifespan(db))
app.add_middleware(DatabaseMiddleware, databases=[db])
install_exception_handlers(app)  # DoesNotExist → 404, a unique violation → 409
```

`DatabaseMiddleware` wraps every request in [`Database.session_scope`][uow.Database.session_scope]:
every session opened through `db.s` while the request is handled is closed when it ends, that
is after the response and its background tasks, also after an exception. That includes the
sessions of sync endpoints, dependencies and background tasks, which FastAPI runs in a thread
pool with a copy of the request's context (each such thread has a session of its own). A
websocket connection is one request: its sessions are closed when it closes. `lifespan`
disposes the engines when the application shuts down.

Each piece takes an [`AsyncDatabase`][uow.AsyncDatabase] as well as a `Database` (or a
container's provider of either): the middleware enters
[`AsyncDatabase.session_scope`][uow.AsyncDatabase.session_scope] and awaits the closing of
every `AsyncSession` opened through `adb.s` during the request, and `lifespan` awaits
`adb.dispose()` and the shutdown of a container's async resources (an
[`AsyncDatabaseContainer`][uow.containers.AsyncDatabaseContainer]'s database).

Inject a UnitOfWork or a service with dependency-injector's `Depends(Provide[...])`; see the
"Web apps" guide.
"""

from __future__ import annotations

import inspect
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy.exc import IntegrityError

from repositories._integrity import is_unique_violation
from uow.async_database import AsyncDatabase
from uow.database import Database
from uow.errors import DoesNotExist
from uow.integrations._common import missing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
    from contextlib import AbstractAsyncContextManager

    from dependency_injector.containers import Container
    from fastapi import FastAPI, Request
    from starlette.types import ASGIApp, Receive, Scope, Send

    from uow.integrations._common import DatabaseSource

try:
    from fastapi import status
    from fastapi.responses import JSONResponse
except ImportError as err:
    raise missing("fastapi", err) from err

__all__ = [
    "CONFLICT_DETAIL",
    "DatabaseMiddleware",
    "does_not_exist_handler",
    "install_exception_handlers",
    "lifespan",
    "session_scope",
    "unique_violation_handler",
]

CONFLICT_DETAIL = "a row with the same unique value already exists"
"""The `detail` of a 409: never the database's message, which quotes the statement and values."""

# An AsyncDatabase, or something that returns one when called, or an awaitable of one: an
# `AsyncDatabaseContainer`'s `async_database` provider returns an awaitable.
AsyncDatabaseSource: TypeAlias = (
    "AsyncDatabase | Callable[[], AsyncDatabase | Awaitable[AsyncDatabase]]"
)


class DatabaseMiddleware:
    """ASGI middleware: one context-local session per database per request, closed at its end.

    Args:
        app: the ASGI application to wrap (Starlette passes it).
        databases: the Databases and AsyncDatabases, or callables returning them (such as a
            container's `db.database` or `db.async_database` provider, resolved per request so
            that overrides apply; an awaitable they return is awaited). The sessions of an
            AsyncDatabase are closed with `await session.close()`.

    Examples:
        ```python
        app = FastAPI()
        app.add_middleware(DatabaseMiddleware, databases=[db])
        ```
    """

    def __init__(
        self, app: ASGIApp, databases: Iterable[DatabaseSource | AsyncDatabaseSource]
    ) -> None:
        self.app = app
        self.databases = tuple(databases)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        async with _session_scopes(self.databases):
            await self.app(scope, receive, send)


def session_scope(
    *sources: DatabaseSource | AsyncDatabaseSource,
) -> Callable[[], AsyncIterator[None]]:
    """A dependency doing what `DatabaseMiddleware` does, for chosen routes or routers only.

    Examples:
        ```python
        router = APIRouter(dependencies=[Depends(session_scope(db))])
        ```
    """

    async def _session_scope() -> AsyncIterator[None]:
        # An async dependency runs in the request's own context, so the scope it enters is
        # inherited by the endpoint and by the sync dependencies FastAPI runs in threads.
        async with _session_scopes(sources):
            yield

    return _session_scope


@asynccontextmanager
async def _session_scopes(
    sources: Iterable[DatabaseSource | AsyncDatabaseSource],
) -> AsyncIterator[None]:
    """The session scope of each database, nested: a Database's entered, an AsyncDatabase's
    awaited."""
    resolved = [await _resolve(source) for source in sources]
    async with AsyncExitStack() as stack:
        for database in resolved:
            if isinstance(database, AsyncDatabase):
                await stack.enter_async_context(database.session_scope())
            else:
                stack.enter_context(database.session_scope())
        yield


async def _resolve(source: DatabaseSource | AsyncDatabaseSource) -> Database | AsyncDatabase:
    """The database of `source`: itself, or what calling it returns (awaited if awaitable)."""
    if isinstance(source, Database | AsyncDatabase):
        return source
    database = source()
    if inspect.isawaitable(database):
        return await database
    return database


def lifespan(
    *resources: DatabaseSource | AsyncDatabaseSource | Container,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A FastAPI `lifespan` that disposes engines when the application shuts down.

    Every resource is shut down, even when an earlier one fails.

    Args:
        resources: Databases and AsyncDatabases (or callables returning them) to dispose
            (an AsyncDatabase's `dispose()` is awaited), and dependency-injector containers (or
            `providers.Container` providers such as `container.db`) whose
            `shutdown_resources()` to call (and await, when the container has async
            resources), which disposes a
            [`DatabaseContainer`][uow.containers.DatabaseContainer]'s database or an
            [`AsyncDatabaseContainer`][uow.containers.AsyncDatabaseContainer]'s. Their
            singletons are reset too (`reset_singletons()`), so that a unit of work built on
            the disposed Database is rebuilt on the new one if the application starts again.

    Examples:
        ```python
        app = FastAPI(lifespan=lifespan(container))
        ```
    """

    @asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Callbacks run last-in first-out: register in reverse to shut down in order.
            for resource in reversed(resources):
                stack.push_async_callback(_shut_down, resource)
            yield

    return _lifespan


async def _shut_down(resource: DatabaseSource | AsyncDatabaseSource | Container) -> None:
    shutdown = getattr(resource, "shutdown_resources", None)
    if shutdown is None:  # a database, or a callable returning one
        database = await _resolve(resource)  # type: ignore[arg-type]
        if isinstance(database, AsyncDatabase):
            await database.dispose()
        else:
            database.dispose()
        return
    shut = shutdown()  # an awaitable when the container has async resources
    if inspect.isawaitable(shut):
        await shut
    reset = getattr(resource, "reset_singletons", None)
    if reset is not None:
        reset()


def install_exception_handlers(app: FastAPI) -> None:
    """Answer `DoesNotExist` with a 404 and a unique violation with a 409, app-wide.

    This is the shortcut for:

    ```python
    app.add_exception_handler(DoesNotExist, does_not_exist_handler)
    app.add_exception_handler(IntegrityError, unique_violation_handler)
    ```

    Other integrity errors (NOT NULL, foreign key, CHECK) stay server errors (500): they mean
    the application let bad data through, which the client cannot fix by sending it again.

    Examples:
        ```python
        app = FastAPI(lifespan=lifespan(db))
        install_exception_handlers(app)
        ```
    """
    app.add_exception_handler(DoesNotExist, does_not_exist_handler)
    app.add_exception_handler(IntegrityError, unique_violation_handler)


async def does_not_exist_handler(request: Request, exc: Exception) -> JSONResponse:
    """404, with the error's message as `detail` (the library's names the model, no values)."""
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)


async def unique_violation_handler(request: Request, exc: Exception) -> JSONResponse:
    """409 for an `IntegrityError` that is a unique violation; any other is raised again.

    Raised again, it reaches the server error handler as if this handler did not exist: a 500.
    The `detail` is [`CONFLICT_DETAIL`][uow.integrations.fastapi.CONFLICT_DETAIL].
    """
    if not (isinstance(exc, IntegrityError) and is_unique_violation(exc)):
        raise exc
    return JSONResponse({"detail": CONFLICT_DETAIL}, status_code=status.HTTP_409_CONFLICT)
