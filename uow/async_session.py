"""The session classes of an `AsyncDatabase`: SQLAlchemy's `AsyncSession` with our seed helpers,
over a sync session that refuses implicit I/O (lazy loads) with a message that says what to do."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession as _SqlaAsyncSession
from sqlalchemy.ext.asyncio import async_scoped_session
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

from uow._scoped import ContextRegistry
from uow.errors import UnitOfWorkError
from uow.session import Session

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pydantic import BaseModel
    from sqlalchemy.ext.asyncio import async_sessionmaker

__all__ = ["AsyncSession", "AsyncScopedSession", "LazyLoadError"]

M = TypeVar("M")


class LazyLoadError(UnitOfWorkError):
    """An attribute of an object would be loaded from the database implicitly, in async code.

    With an async driver, SQL can only run where it is awaited; touching an unloaded
    relationship (`user.posts`) or an expired column outside an awaited call would need I/O
    that nothing awaits. Load what you need up front: `filter(...).prefetch_related("posts")`,
    `select_related("author")`, or `options(selectinload(User.posts))`.
    """


class _BridgedSession(Session):
    """The sync session inside each `AsyncSession` of an AsyncDatabase.

    Every path to SQL (queries, lazy loads, refreshes of expired attributes) goes through
    `execute`. Called outside SQLAlchemy's greenlet bridge (plain code on the event loop), it
    could only fail deep in the driver with `MissingGreenlet`; it fails here instead, naming
    the attribute and the fix.
    """

    # Its `execute` only refuses I/O outside the bridge, where the repositories never run:
    # their shortcuts for plain models (repositories/_streaming.py) may bypass it.
    _repositories_plain_paths = True

    def execute(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
        if not in_greenlet():
            raise _lazy_load_error(statement, kwargs.get("execution_options"))
        return super().execute(statement, *args, **kwargs)


def _lazy_load_error(statement: Any, execution_options: Any = None) -> LazyLoadError:
    # The lazy loader passes the object it loads for in its load options
    # (execution_options["_sa_orm_load_options"]), and the relationship's path in the
    # statement's compile options.
    load_options = (execution_options or {}).get("_sa_orm_load_options")
    state = getattr(load_options, "_lazy_loaded_from", None)
    options = getattr(statement, "_compile_options", None)
    path = getattr(options, "_current_path", None)
    prop = getattr(path, "prop", None) if path is not None else None
    if state is not None and prop is not None:
        owner = state.class_.__name__
        name = f"{owner}.{prop.key}"
        return LazyLoadError(
            f"{name} is not loaded, and async code cannot load it implicitly (that would "
            f"be I/O nobody awaits). Load it with the query: "
            f'.prefetch_related("{prop.key}") or .select_related("{prop.key}") on the query '
            f"(or .options(selectinload({name}))), or `await session.refresh(obj, "
            f'["{prop.key}"])`'
        )
    refreshed = getattr(load_options, "_refresh_state", None)
    if refreshed is not None:
        owner = refreshed.class_.__name__
        names = ", ".join(sorted(getattr(options, "_only_load_props", None) or ()))
        return LazyLoadError(
            f"this {owner}'s attributes ({names}) are not loaded: expired by a commit or a "
            "rollback in its block, or deferred. Async code cannot load them implicitly (that "
            "would be I/O nobody awaits): read the object again in the block, or `await "
            "uow.session.refresh(obj)`"
        )
    return LazyLoadError(
        "an attribute is not loaded (expired after a commit or a rollback, or deferred), and "
        "async code cannot load it implicitly (that would be I/O nobody awaits). Load it with "
        "the query (prefetch_related / select_related / options(...)), or "
        "`await session.refresh(obj)`; objects read in a block of an AsyncDatabase keep "
        "their attributes after its commit unless expire_on_commit=True"
    )


class AsyncSession(_SqlaAsyncSession):
    """SQLAlchemy's `AsyncSession`, with the seed helpers of [`Session`][uow.Session], awaited.

    Its `sync_session` is a [`Session`][uow.Session]: repositories run their sync code on it
    through SQLAlchemy's greenlet bridge. Touching an attribute that is not loaded raises
    [`LazyLoadError`][uow.LazyLoadError] at once, naming the attribute and the fix.

    Examples:
        ```python
        async with adb.Session() as session, session.begin():
            ada = await session.first_or_create(User, email="ada@example.com")
        ```
    """

    sync_session_class = _BridgedSession
    sync_session: Session

    async def all(self, model: type[M], /, **lookups: Any) -> list[M]:
        """Shortcut for `AsyncRepository(session, model).all(**lookups)`."""
        return await greenlet_spawn(self.sync_session.all, model, **lookups)

    async def first(self, model: type[M], /, **lookups: Any) -> M | None:
        """Shortcut for `AsyncRepository(session, model).first(**lookups)`."""
        return await greenlet_spawn(self.sync_session.first, model, **lookups)

    async def create(
        self, model: type[M], data: BaseModel | dict[str, Any] | None = None, /, **attrs: Any
    ) -> M:
        """Shortcut for `AsyncRepository(session, model).create(data, **attrs)`."""
        return await greenlet_spawn(self.sync_session.create, model, data, **attrs)

    async def first_or_create(
        self, model: type[M], /, defaults: BaseModel | dict[str, Any] | None = None, **attrs: Any
    ) -> M:
        """Shortcut for `AsyncRepository(session, model).first_or_create(defaults, **attrs)`."""
        return await greenlet_spawn(self.sync_session.first_or_create, model, defaults, **attrs)

    async def create_or_first(
        self, model: type[M], /, defaults: BaseModel | dict[str, Any] | None = None, **attrs: Any
    ) -> M:
        """Shortcut for `AsyncRepository(session, model).create_or_first(defaults, **attrs)`."""
        return await greenlet_spawn(self.sync_session.create_or_first, model, defaults, **attrs)


class AsyncScopedSession(async_scoped_session[AsyncSession]):
    """`adb.s`: a proxy to the current context's `AsyncSession`, with the seed helpers.

    `adb.s()` returns the session itself; `await adb.s.remove()` closes and forgets it. One
    session per context (`contextvars`): tasks started from a context without a session each
    make their own. Everything `async_scoped_session` proxies (`execute`, `scalars`, `get`,
    `add`, ...) works as documented by SQLAlchemy.
    """

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], name: str) -> None:
        super().__init__(session_factory, scopefunc=_unused_scope)
        self._registry = ContextRegistry(session_factory, name)
        self.registry = self._registry  # type: ignore[assignment]

    @asynccontextmanager
    async def scope(self) -> AsyncIterator[None]:
        """See [`AsyncDatabase.session_scope`][uow.AsyncDatabase.session_scope]."""
        opened: list[AsyncSession] = []
        try:
            with self._registry.scope(opened.append):
                yield
        finally:
            for session in opened:
                await session.close()

    def _forget(self) -> None:
        """Forget this context's session without closing it (it belongs to another context:
        a block that ended in the context this one was copied from)."""
        self._registry.clear()

    def _remove_now(self) -> None:
        """`remove()` from sync code running in the bridge (a unit of work's exit)."""
        if self._registry.has():
            self._registry().sync_session.close()
        self._registry.clear()

    async def all(self, model: type[M], /, **lookups: Any) -> list[M]:
        """Proxy for [`AsyncSession.all`][uow.AsyncSession.all] on the current session."""
        return await self.registry().all(model, **lookups)

    async def first(self, model: type[M], /, **lookups: Any) -> M | None:
        """Proxy for [`AsyncSession.first`][uow.AsyncSession.first] on the current session."""
        return await self.registry().first(model, **lookups)

    async def create(
        self, model: type[M], data: BaseModel | dict[str, Any] | None = None, /, **attrs: Any
    ) -> M:
        """Proxy for [`AsyncSession.create`][uow.AsyncSession.create]."""
        return await self.registry().create(model, data, **attrs)

    async def first_or_create(
        self, model: type[M], /, defaults: BaseModel | dict[str, Any] | None = None, **attrs: Any
    ) -> M:
        """Proxy for [`AsyncSession.first_or_create`][uow.AsyncSession.first_or_create]."""
        return await self.registry().first_or_create(model, defaults, **attrs)

    async def create_or_first(
        self, model: type[M], /, defaults: BaseModel | dict[str, Any] | None = None, **attrs: Any
    ) -> M:
        """Proxy for [`AsyncSession.create_or_first`][uow.AsyncSession.create_or_first]."""
        return await self.registry().create_or_first(model, defaults, **attrs)


def _unused_scope() -> Any:  # async_scoped_session wants one; our registry replaces its own
    return None
