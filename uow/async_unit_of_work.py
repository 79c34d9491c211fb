"""`AsyncUnitOfWork`: `async with uow:`, the same transaction logic as `UnitOfWork`.

One implementation: [`UnitOfWorkBase`][uow.unit_of_work.UnitOfWorkBase] holds the frame stack,
savepoints, commit, rollback and the repository attributes. `UnitOfWork` runs it directly; this
class runs the same methods inside SQLAlchemy's greenlet bridge (`greenlet_spawn`), where the
sync session's I/O awaits the async driver. The stack lives in the task's context (the bridge
runs in the caller's context), so tasks started from outside a block each get their own session
and transaction.
"""

from __future__ import annotations

import inspect
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

from sqlalchemy.util import greenlet_spawn

from repositories.async_repository import AsyncRepository
from uow import _retry
from uow.unit_of_work import UnitOfWorkBase, log_callback_failure, run_callback

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
    from types import TracebackType

    from uow.async_database import AsyncDatabase
    from uow.async_session import AsyncSession
    from uow.unit_of_work import _Callback

__all__ = ["AsyncUnitOfWork"]

_T = TypeVar("_T")


class AsyncUnitOfWork(UnitOfWorkBase):
    """A transaction boundary with typed async repositories, used as `async with uow:`.

    ```python
    class AppUnitOfWork(AsyncUnitOfWork):
        users: UserRepository            # an AsyncRepository[User] subclass
        posts: AsyncRepository[Post]

    uow = AppUnitOfWork(adb)
    async with uow:
        user = await uow.users.first_or_create(email="ada@example.com")
        uow.on_commit(send_welcome_mail)  # a plain function or a coroutine function
    ```

    Everything [`UnitOfWork`][uow.UnitOfWork] does, it does, by running the same code: commit
    on a clean exit, rollback on an exception (a cancelled task included), nested blocks as
    savepoints, `set_rollback`, `on_commit`. `commit()` and `rollback()` are awaited;
    `set_rollback()` and `on_commit()` are not. The annotations must name
    [`AsyncRepository`][repositories.AsyncRepository] classes.

    Args:
        database: the AsyncDatabase whose context-local session the unit of work uses.
    """

    _repository_class = AsyncRepository

    def __init__(self, database: AsyncDatabase) -> None:
        self.database = database

    @property
    def session(self) -> AsyncSession:
        """The `AsyncSession` of the current block (the same object as `adb.s()` inside it).

        Raises:
            UnitOfWorkError: outside an `async with uow:` block.
        """
        session: AsyncSession = self._outermost().facade
        return session

    async def __aenter__(self) -> Self:
        await greenlet_spawn(self._enter)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await run_callbacks(await greenlet_spawn(self._exit, exc_type is not None))

    @asynccontextmanager
    async def read_only(self) -> AsyncIterator[Self]:
        """`async with uow.read_only():` a block that only reads, from a read replica when it
        can: as [`UnitOfWork.read_only`][uow.UnitOfWork.read_only].

        Raises:
            UnitOfWorkError: at a write inside the block.
        """
        await greenlet_spawn(self._enter, True)
        try:
            yield self
        except BaseException:
            await run_callbacks(await greenlet_spawn(self._exit, True))
            raise
        await run_callbacks(await greenlet_spawn(self._exit, False))

    async def commit(self) -> None:
        """See [`UnitOfWork.commit`][uow.UnitOfWork.commit]; coroutine callbacks are awaited."""
        await run_callbacks(await greenlet_spawn(self._commit))

    async def rollback(self) -> None:
        """See [`UnitOfWork.rollback`][uow.UnitOfWork.rollback]."""
        await greenlet_spawn(self._rollback)

    def on_commit(self, callback: Callable[[], object], robust: bool = False) -> None:
        """Run `callback` after the outermost transaction commits; never after a rollback.

        As [`UnitOfWork.on_commit`][uow.UnitOfWork.on_commit]; a coroutine function (or any
        callable returning an awaitable) is awaited, in order with the others.

        Raises:
            TypeError: `callback` is not callable.
            UnitOfWorkError: outside a block.
        """
        self._add_callback(callback, robust)

    @overload
    async def run(
        self, fn: Callable[..., Awaitable[_T]], /, *args: Any, retries: int = 3, **kwargs: Any
    ) -> _T: ...

    @overload
    async def run(
        self, fn: Callable[..., _T], /, *args: Any, retries: int = 3, **kwargs: Any
    ) -> _T: ...

    async def run(
        self, fn: Callable[..., Any], /, *args: Any, retries: int = 3, **kwargs: Any
    ) -> Any:
        """Run `fn(*args, **kwargs)` in an `async with uow:` block; run it again after a
        serialization failure or a deadlock.

        As [`UnitOfWork.run`][uow.UnitOfWork.run]: `await uow.run(fn, ...)`. `fn` may be a
        coroutine function (its result is awaited) or a plain function; coroutine on_commit
        callbacks of the attempt that committed are awaited.

        Returns:
            What `fn` returned (awaited) in the attempt that committed.

        Raises:
            TypeError: `fn` is not callable, or `retries` is not an int; before anything runs.
            ValueError: `retries` is negative.
            UnitOfWorkError: inside an open block (a part of a transaction cannot be retried).
        """
        _retry.check(self, fn, retries)
        result, callbacks = await _retry.run_async(self, fn, args, kwargs, retries)
        await run_callbacks(callbacks)
        return result


async def run_callbacks(callbacks: Iterable[_Callback]) -> None:
    """Run on_commit callbacks in order, awaiting those that return awaitables; a robust
    callback's exception is logged, another's propagates (see `UnitOfWork.on_commit`)."""
    for callback, robust in callbacks:
        result: Any = run_callback(callback, robust)
        if not inspect.isawaitable(result):
            continue
        if not robust:
            await result
            continue
        try:
            await result
        except Exception:
            log_callback_failure(callback)
