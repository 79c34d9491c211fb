"""FastAPI (and any ASGI app): request-scoped sessions and engine disposal at shutdown.

```python
app = FastAPI(lifespan=lifespan(db))
app.add_middleware(DatabaseMiddleware, databases=[db])
```

`DatabaseMiddleware` wraps every request in [`Database.session_scope`][uow.Database.session_scope]:
the request, its dependencies and its endpoint share one context-local session per database
(sync endpoints and dependencies too, although FastAPI runs them in a thread pool with a copy of
the request's context), and that session is closed when the response has been sent, also after
an exception. `lifespan` disposes the engines when the application shuts down.

Inject a UnitOfWork or a service with dependency-injector's `Depends(Provide[...])`; see the
"Web apps" guide.
"""

from __future__ import annotations

from contextlib import ExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from dependency_injector.containers import Container

from uow.integrations._common import databases, missing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable
    from contextlib import AbstractAsyncContextManager

    from starlette.types import ASGIApp, Receive, Scope, Send

    from uow.integrations._common import DatabaseSource

try:
    import fastapi  # noqa: F401  (the integration is for FastAPI apps)
except ImportError as err:
    raise missing("fastapi", err) from err

__all__ = ["DatabaseMiddleware", "lifespan", "session_scope"]


class DatabaseMiddleware:
    """ASGI middleware: one context-local session per database per request, closed at its end.

    Args:
        app: the ASGI application to wrap (Starlette passes it).
        databases: the Databases, or callables returning them (such as a container's
            `db.database` provider, resolved per request so that overrides apply).

    Examples:
        ```python
        app = FastAPI()
        app.add_middleware(DatabaseMiddleware, databases=[db])
        ```
    """

    def __init__(self, app: ASGIApp, databases: Iterable[DatabaseSource]) -> None:
        self.app = app
        self.databases = tuple(databases)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        with ExitStack() as stack:
            for database in databases(self.databases):
                stack.enter_context(database.session_scope())
            await self.app(scope, receive, send)


def session_scope(*sources: DatabaseSource) -> Callable[[], AsyncIterator[None]]:
    """A dependency doing what `DatabaseMiddleware` does, for chosen routes or routers only.

    Examples:
        ```python
        router = APIRouter(dependencies=[Depends(session_scope(db))])
        ```
    """

    async def _session_scope() -> AsyncIterator[None]:
        # An async dependency runs in the request's own context, so the scope it enters is
        # inherited by the endpoint and by the sync dependencies FastAPI runs in threads.
        with ExitStack() as stack:
            for database in databases(sources):
                stack.enter_context(database.session_scope())
            yield

    return _session_scope


def lifespan(
    *resources: DatabaseSource | Container,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A FastAPI `lifespan` that disposes engines when the application shuts down.

    Args:
        resources: Databases (or callables returning them) to dispose, and dependency-injector
            containers whose `shutdown_resources()` to call (which disposes a
            [`DatabaseContainer`][uow.containers.DatabaseContainer]'s database).

    Examples:
        ```python
        app = FastAPI(lifespan=lifespan(container))
        ```
    """

    @asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for resource in resources:
                if isinstance(resource, Container):
                    resource.shutdown_resources()
                else:
                    databases([resource])[0].dispose()

    return _lifespan
