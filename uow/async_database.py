"""`AsyncDatabase`: the `AsyncEngine`, the async session factory and the context-local `adb.s`."""

from __future__ import annotations

import itertools
from contextlib import asynccontextmanager
from math import inf
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from uow._fork import ProcessLocal
from uow._urls import resolve_url
from uow.async_session import AsyncScopedSession, AsyncSession
from uow.database import (
    _begin_on_server,
    _check_can_join,
    _check_flag,
    _check_replicas,
    _ids,
    _sessions_joining,
    build_engine,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from sqlalchemy import MetaData
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from uow._sqlite import TransactionMode
    from uow.unit_of_work import _Frame

__all__ = ["AsyncDatabase"]


class AsyncDatabase:
    """One database behind an async driver: its `AsyncEngine`, a session factory and `adb.s`.

    Everything [`Database`][uow.Database] says holds here: no connection at creation,
    `expire_on_commit=False`, SQLite's working SAVEPOINTs, WAL and foreign keys, lazy BEGIN,
    replacing connections the server ended, fork safety. The engine is SQLAlchemy's
    `AsyncEngine`; the set-up is installed on its `sync_engine`, the same code as for a
    `Database`.

    Args:
        url: a URL with an async driver: `"postgresql+asyncpg://..."`,
            `"postgresql+psycopg://..."` (psycopg 3's async connection) or
            `"sqlite+aiosqlite:///app.db"`. A URL that names no driver gets an installed
            async one: `postgresql://` (and `postgres://`) psycopg (3), else asyncpg;
            `sqlite://` aiosqlite. A sync-only driver named in the URL (psycopg2, pysqlite)
            is SQLAlchemy's `InvalidRequestError`.
        engine_options: keyword arguments for `create_async_engine` (copied, never mutated).
        session_options: keyword arguments for the `async_sessionmaker`.
        sqlite_transaction_mode: as for [`Database`][uow.Database].
        lazy_begin: as for [`Database`][uow.Database].
        replicas: as for [`Database`][uow.Database], with async drivers: `async with
            uow.read_only():` reads from one of them.
        replica_lag_window: as for [`Database`][uow.Database].
        transaction_pooling: as for [`Database`][uow.Database]: the database is reached
            through a pooler in transaction pooling mode (PgBouncer's `pool_mode =
            transaction`); with asyncpg, BEGIN is then eager.

    Raises:
        ImportError: the URL's driver is not installed; the message names the extra to
            install (`"uow-repositories[asyncpg]"`, `"uow-repositories[aiosqlite]"`, ...).

    Examples:
        ```python
        adb = AsyncDatabase("sqlite+aiosqlite:///app.db")
        await adb.create_all(Base.metadata)
        async with adb.Session() as session, session.begin():
            session.add(User(email="ada@example.com", name="Ada"))
        await adb.dispose()
        ```
    """

    def __init__(
        self,
        url: str | URL,
        engine_options: Mapping[str, Any] | None = None,
        session_options: Mapping[str, Any] | None = None,
        *,
        sqlite_transaction_mode: TransactionMode = "IMMEDIATE",
        lazy_begin: bool = True,
        replicas: Sequence[str | URL] = (),
        replica_lag_window: float = 2.0,
        transaction_pooling: bool = False,
    ) -> None:
        replica_urls = _check_replicas(replicas, replica_lag_window)
        # What it was built with, before the set-up's own options (for uow.migrations' engine).
        self._engine_options: dict[str, Any] = dict(engine_options or {})
        options = self._engine_options
        self._sqlite_transaction_mode: TransactionMode = sqlite_transaction_mode
        self.url: URL
        self.lazy_begin: bool
        self.engine: AsyncEngine
        self.transaction_pooling: bool = _check_flag("transaction_pooling", transaction_pooling)
        self.url, self.lazy_begin, self.engine = build_engine(
            _async_url(url, options), options, sqlite_transaction_mode, lazy_begin,
            create_async_engine, self.transaction_pooling,
        )  # fmt: skip

        factory_options: dict[str, Any] = {"expire_on_commit": False}
        factory_options.update(session_options or {})
        self.Session: async_sessionmaker[AsyncSession] = async_sessionmaker(
            bind=self.engine, class_=AsyncSession, **factory_options
        )
        self.replica_engines: tuple[AsyncEngine, ...] = tuple(
            build_engine(
                _async_url(url, options), options, sqlite_transaction_mode, lazy_begin,
                create_async_engine, self.transaction_pooling,
            )[2]
            for url in replica_urls
        )  # fmt: skip
        self.replica_lag_window: float = float(replica_lag_window)
        self._replica_factories: tuple[async_sessionmaker[AsyncSession], ...] = tuple(
            async_sessionmaker(bind=engine, class_=AsyncSession, **factory_options)
            for engine in self.replica_engines
        )
        self._next_replica = itertools.count()
        # When each replica, which did not answer, may be tried again (uow.unit_of_work).
        self._replica_down_until: list[float] = [-inf] * len(self.replica_engines)
        number = next(_ids)
        self._last_write: ProcessLocal[float] = ProcessLocal(f"uow_last_write_{number}", -inf)
        self.s: AsyncScopedSession = AsyncScopedSession(self.Session, f"uow_session_{number}")
        self._frames: ProcessLocal[tuple[_Frame, ...]] = ProcessLocal(f"uow_stack_{number}", ())

    @property
    def in_unit_of_work(self) -> bool:
        """Whether the current context is inside an `async with uow:` block over this database."""
        return bool(self._frames.get())

    def session_scope(self) -> AbstractAsyncContextManager[None]:
        """Close, at the end of the block, every session opened inside it (awaited).

        The async counterpart of [`Database.session_scope`][uow.Database.session_scope]:
        `async with adb.session_scope():` records every session opened through `adb.s` in
        this context or in contexts copied from it (tasks), and closes them all at the end.
        """
        return self.s.scope()

    @asynccontextmanager
    async def test_transaction(self) -> AsyncIterator[AsyncConnection]:
        """`async with adb.test_transaction():` one transaction rolled back at the end: for tests.

        As [`Database.test_transaction`][uow.Database.test_transaction]: every session of this
        AsyncDatabase opened inside (`adb.s`, async units of work, `adb.Session()`, in any task)
        joins one outer connection through a SAVEPOINT of its own; a unit of work's COMMIT
        releases its savepoint and its `on_commit` callbacks run then; everything is rolled back
        at the end. The connection belongs to the event loop the block runs in: code that runs
        the app in another loop (Starlette's `TestClient`) cannot use it on asyncpg; send
        requests with `httpx.AsyncClient(transport=httpx.ASGITransport(app))` in the test's
        loop instead.

        Raises:
            UnitOfWorkError: as for `Database.test_transaction`.
        """
        _check_can_join(self)
        async with self.engine.connect() as connection:
            transaction = await connection.begin()
            try:
                await connection.run_sync(_begin_on_server)
                with _sessions_joining(self.Session, connection):
                    self._test_connection = connection
                    try:
                        yield connection
                    finally:
                        self._test_connection = None
                        await self.s.remove()
            finally:
                if transaction.is_active:
                    await transaction.rollback()

    # The outer connection of the open test transaction, which create_all and drop_all join.
    _test_connection: AsyncConnection | None = None

    async def create_all(self, metadata: MetaData) -> None:
        """Create the tables of `metadata` that do not exist yet (inside `test_transaction()`,
        in its transaction)."""
        if self._test_connection is not None:
            await self._test_connection.run_sync(metadata.create_all)
            return
        async with self.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    async def drop_all(self, metadata: MetaData) -> None:
        """Drop the tables of `metadata` that exist (inside `test_transaction()`, in its
        transaction)."""
        if self._test_connection is not None:
            await self._test_connection.run_sync(metadata.drop_all)
            return
        async with self.engine.begin() as connection:
            await connection.run_sync(metadata.drop_all)

    async def dispose(self) -> None:
        """Close the pool's connections (`await engine.dispose()`); the database stays usable."""
        await self.engine.dispose()
        for engine in self.replica_engines:
            await engine.dispose()

    def __repr__(self) -> str:
        return f"AsyncDatabase({self.url.render_as_string(hide_password=True)!r})"


def _async_url(url: str | URL, options: Mapping[str, Any]) -> URL:
    """`url`, with an installed async driver when it names none (see AsyncDatabase's Args)."""
    return resolve_url(url, check_driver="module" not in options, is_async=True)
