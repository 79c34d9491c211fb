"""A sync face over the async API, so the sync behavioural tests also run on the async stack.

A test of an opted-in module (see `both_faces` in tests/conftest.py) runs once more per async
driver: its `db` is a `FacadeDatabase` over an `AsyncDatabase`, its `uow` a facade over an
`AsyncUnitOfWork`, and the test function itself runs inside SQLAlchemy's greenlet bridge
(`greenlet_spawn`) on an event loop of its own (`Bridge`). Each facade looks like the sync
object of the same role and calls the async one:

- a coroutine a call returns is awaited (`sqlalchemy.util.await_`, which suspends the test's
  greenlet until the event loop has run it), so `uow.users.first_or_create(...)` runs
  `await async_uow.users.first_or_create(...)`;
- `with` over an async context manager awaits its `__aenter__`/`__aexit__`; `for` over an
  async iterator (an `AsyncQuery`, `iterator()`'s stream) awaits each item;
- the async objects a call returns (sessions, repositories, queries, ...) come back as facades,
  one per object, so `uow.session is db.s()` holds as on the sync side.

Plain (not awaited) methods and attributes are called on the event loop too, outside any
greenlet: a method the async API offers as plain but that needs I/O fails there as it would in
an application, instead of quietly using the test's greenlet. Only what the test body does
itself (reading an attribute of a loaded object, an event listener) runs in the greenlet, where
an implicit lazy load succeeds rather than raising `LazyLoadError`: these tests check
behaviour, not the async face's refusal of implicit I/O (tested on its own).

A method missing from the async API fails the test with AttributeError.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncSession,
    AsyncSessionTransaction,
    async_scoped_session,
    async_sessionmaker,
)
from sqlalchemy.util import await_, greenlet_spawn
from sqlalchemy.util.concurrency import in_greenlet

from repositories import AsyncQuery, AsyncRepository, Repository
from tests.models import AppUnitOfWork, Membership, Post, User
from uow import AsyncDatabase, AsyncUnitOfWork, UnitOfWork

__all__ = [
    "ASYNC_FACES",
    "AsyncAppUnitOfWork",
    "AsyncUserRepository",
    "Bridge",
    "FacadeDatabase",
    "async_url",
    "facade_unit_of_work",
    "sync_constructors",
]

T = TypeVar("T")
_END = object()  # what next() gives back for an exhausted generator, in Bridge.bridged_fixture

# The async drivers each backend runs on, by face name (the part of a test id after the backend).
ASYNC_FACES: dict[str, tuple[str, ...]] = {
    "sqlite": ("aiosqlite",),
    "postgresql": ("asyncpg", "psycopg-async"),
}

_DRIVERS = {"aiosqlite": "sqlite+aiosqlite", "asyncpg": "postgresql+asyncpg"}


def async_url(sync_url: str, face: str) -> str:
    """The URL of the sync test database, with `face`'s async driver."""
    url = make_url(sync_url)
    if face == "psycopg-async":
        return url.render_as_string(hide_password=False)  # create_async_engine picks psycopg's
    return url.set(drivername=_DRIVERS[face]).render_as_string(hide_password=False)


# -- the async twins of tests/models.py's repositories and unit of work --------------------------


class AsyncUserRepository(AsyncRepository[User]):
    """tests.models.UserRepository, awaited."""

    async def adults(self) -> list[User]:
        return await self.filter(age__gte=18).order_by("-age", "email").all()


class AsyncAppUnitOfWork(AsyncUnitOfWork):
    """tests.models.AppUnitOfWork over an AsyncDatabase."""

    users: AsyncUserRepository
    posts: AsyncRepository[Post]
    memberships: AsyncRepository[Membership]


# -- running a test on the event loop ---------------------------------------------------------


class Bridge:
    """The event loop an async-face test runs on: its fixtures' set-up, its body, its teardown."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run_test(self, function: Callable[..., object], **kwargs: Any) -> None:
        """Run the sync test `function` in the greenlet bridge, where facades may await."""
        self._call(function, **kwargs)

    def run(self, awaitable: Any) -> Any:
        """Await `awaitable` from outside the bridge (fixtures)."""
        return self.loop.run_until_complete(awaitable)

    def bridged_fixture(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """The fixture `function` run in the bridge, as the test is: facades work in it.

        A generator fixture's set-up and teardown each run in the bridge (in a task of their
        own: a fixture cannot leave a block open for the test, on either face).
        """
        if not inspect.isgeneratorfunction(function):
            return functools.partial(self._call, function)

        def generator(**kwargs: Any) -> Iterator[Any]:
            steps = function(**kwargs)
            value = self._call(next, steps, _END)
            if value is _END:
                raise ValueError(f"{function.__name__} did not yield a value")
            yield value
            if self._call(next, steps, _END) is not _END:
                raise ValueError(f"{function.__name__} yielded twice")

        return generator

    def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        result: T = self.loop.run_until_complete(greenlet_spawn(function, *args, **kwargs))
        return result

    def close(self) -> None:
        """Finish pending async generators and close the loop; forget the test's facades."""
        try:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            _facades.clear()


# -- the facades ------------------------------------------------------------------------------

# One facade per async object (so identity compares as on the sync side), for one test at a
# time: the facades keep their targets alive, so ids stay unique until Bridge.close() clears it.
_facades: dict[int, Facade] = {}

# The classes whose objects a facade stands for: what a sync test holds only as sync objects.
_ASYNC_CLASSES: tuple[type[Any], ...] = (
    AsyncDatabase,
    AsyncUnitOfWork,
    AsyncRepository,
    AsyncQuery,
    AsyncSession,
    AsyncSessionTransaction,
    async_scoped_session,
    async_sessionmaker,
)


async def _call(function: Callable[..., T], args: Any, kwargs: Any) -> T:
    return function(*args, **kwargs)


def _on_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the plain `function` on the event loop, outside the test's greenlet."""
    return await_(_call(function, args, kwargs))


def sync_view(value: Any) -> Any:
    """What the sync API would have returned for the async API's `value`."""
    if inspect.iscoroutine(value):
        return sync_view(await_(value))
    if isinstance(value, AsyncSessionTransaction) and value.sync_transaction is None:
        # session.begin(): the sync one begins at once; awaiting the async one starts it.
        value = await_(value)
    if isinstance(value, _ASYNC_CLASSES):
        return _facade(value)
    if isinstance(value, AsyncIterator):
        return _drain(value)
    return value


def _facade(target: Any) -> Facade:
    facade = _facades.get(id(target))
    if facade is None:
        facade = _facades[id(target)] = _facade_class(target)(target)
    return facade


def _facade_class(target: Any) -> type[Facade]:
    if isinstance(target, AsyncDatabase):
        return FacadeDatabase
    if isinstance(target, AsyncUnitOfWork):
        return FacadeUnitOfWork
    return Facade


def _drain(items: AsyncIterator[T]) -> Iterator[T]:
    """A sync generator over the async iterator `items`; closing it closes `items`."""
    try:
        while True:
            try:
                item = await_(anext(items))
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None and in_greenlet():
            await_(aclose())


def _method(bound: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(bound)
    def call(*args: Any, **kwargs: Any) -> Any:
        return sync_view(_on_loop(bound, *args, **kwargs))

    return call


class Facade:
    """The sync face of one async object (see the module's docstring)."""

    __slots__ = ("_target",)

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    @property
    def target(self) -> Any:
        """The async object behind this facade."""
        return self._target

    def __getattr__(self, name: str) -> Any:
        value = _on_loop(getattr, self._target, name)
        if inspect.ismethod(value) or inspect.isfunction(value):
            return _method(value)
        return sync_view(value)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._written(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._written(), name)

    def _written(self) -> Any:
        """Where attribute writes go (monkeypatch.setattr and its undo)."""
        if isinstance(self._target, AsyncSession):
            # The transaction code both faces share calls the sync session's methods: what a
            # test replaces there (a failing rollback, say) is what the async face runs.
            return self._target.sync_session
        return self._target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return sync_view(_on_loop(self._target, *args, **kwargs))

    def __enter__(self) -> Any:
        if isinstance(self._target, AsyncSessionTransaction):
            return self  # begun when session.begin() returned it, as on the sync side
        return sync_view(await_(self._target.__aenter__()))

    def __exit__(self, *exc_info: Any) -> bool:
        return bool(await_(self._target.__aexit__(*exc_info)))

    def __iter__(self) -> Iterator[Any]:
        return _drain(aiter(self._target))

    def __getitem__(self, key: Any) -> Any:
        return sync_view(_on_loop(self._target.__getitem__, key))

    def __contains__(self, item: object) -> bool:
        return bool(_on_loop(self._target.__contains__, item))

    def __repr__(self) -> str:
        return f"<facade of {self._target!r}>"


class FacadeUnitOfWork(Facade):
    """An AsyncUnitOfWork's sync face: `on_commit` callbacks run in the bridge too."""

    __slots__ = ()

    def on_commit(self, callback: Any, robust: bool = False) -> None:
        """As UnitOfWork.on_commit; a sync test's callback may use facades (so await)."""
        if callable(callback):
            callback = _in_bridge(callback)
        _on_loop(self._target.on_commit, callback, robust)


def _in_bridge(callback: Callable[[], object]) -> Callable[[], Any]:
    # AsyncUnitOfWork awaits what a callback returns: run the sync callback in a greenlet of
    # its own, where the facades it uses (committed_emails(db), `with uow:`) may await.
    async def bridged() -> object:
        return await greenlet_spawn(callback)

    bridged.__qualname__ = f"bridged {getattr(callback, '__qualname__', callback)!r}"
    return bridged


class FacadeDatabase(Facade):
    """An AsyncDatabase's sync face; `engine` is its AsyncEngine's `sync_engine`.

    The sync engine is what event listeners (`count_statements`), pool statistics and raw
    connections (`db.engine.begin()` in the test's greenlet) work with on the async side.
    """

    __slots__ = ()

    @property
    def engine(self) -> Engine:
        """The AsyncEngine's sync_engine."""
        engine: Engine = self._target.engine.sync_engine
        return engine


def sync_constructors(namespace: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    """Stand-ins for the sync classes a test module builds in its bodies (`UnitOfWork(db)`,
    `Repository(session, Model)`): given a facade (of an AsyncDatabase, of an AsyncSession) they
    build the async class's facade, given anything else the sync class. The async-face `db`
    fixture puts them in the test's module for the duration of the test."""
    twins: dict[type[Any], type[Any]] = {
        UnitOfWork: AsyncUnitOfWork,
        AppUnitOfWork: AsyncAppUnitOfWork,
        Repository: AsyncRepository,
    }
    return {
        name: _constructor(value, twins[value])
        for name, value in namespace.items()
        if isinstance(value, type) and value in twins
    }


def _constructor(sync_class: type[Any], async_class: type[Any]) -> Callable[..., Any]:
    def construct(first: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(first, Facade):
            return _facade(async_class(first.target, *args, **kwargs))
        return sync_class(first, *args, **kwargs)

    return construct


def facade_unit_of_work(database: FacadeDatabase) -> Facade:
    """The async face's `uow` fixture: an AsyncAppUnitOfWork over `database`, as a facade."""
    return _facade(AsyncAppUnitOfWork(database.target))


def facade_database(url: str, **options: Any) -> FacadeDatabase:
    """An AsyncDatabase on `url` (built with `options`), as a facade."""
    facade = _facade(AsyncDatabase(url, **options))
    assert isinstance(facade, FacadeDatabase)
    return facade
