"""`uow.run()`: run a block again after a serialization failure or a deadlock.

One implementation for both faces. An attempt (`_attempt`) is the sync block logic of
`UnitOfWorkBase` (`_enter`, the function, `_exit`); the async face runs that same attempt in
SQLAlchemy's greenlet bridge, awaiting the function's awaitable with `await_only`. The retry
strategy (which errors, how many attempts, how long to wait) is built once by `_strategy` and
given to tenacity's `Retrying` or `AsyncRetrying`, which differ only in how they sleep.

The on_commit callbacks of the attempt that committed are returned, not run: the caller runs
them after the retries are over, so an error raised by a callback (after the commit) is never
mistaken for a failure of the block and never makes it run twice.

tenacity is a dependency of the package (small, pure Python, no dependencies of its own), not
an extra: `run()` is part of the core API and must not fail for want of an optional install. It
is imported on the first `run()` only, so `import uow` does not pay for it.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.util import await_only, greenlet_spawn

from uow.errors import UnitOfWorkError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from uow.unit_of_work import UnitOfWorkBase, _Callback

__all__ = ["RETRYABLE_SQLSTATES", "is_retryable", "run", "run_async"]

logger = logging.getLogger("uow")

#: serialization_failure and deadlock_detected: the transaction lost a race and was rolled back;
#: running it again from the start is the documented cure (PostgreSQL manual, 13.4).
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})

# The backoff: a random wait in [0, min(_MAX_WAIT, _FIRST_WAIT * 2**n)] before the n-th retry
# ("full jitter"), so that racing clients spread out instead of colliding again in step.
_FIRST_WAIT = 0.01
_MAX_WAIT = 1.0


def is_retryable(error: BaseException) -> bool:
    """Whether `error` means "run the whole transaction again": a serialization failure
    (SQLSTATE 40001) or a deadlock (40P01).

    It looks through the chain of causes (`__cause__`) and the driver errors SQLAlchemy wraps
    (`DBAPIError.orig`), so it recognises the error of every driver the library supports
    (psycopg, psycopg2, asyncpg, raw or wrapped by SQLAlchemy) and a
    [`UnitOfWorkError`][uow.UnitOfWorkError] raised for a commit that such an error aborted.
    An error merely raised while handling one (`__context__`) does not count: it is an error of
    its own.

    [`uow.run()`][uow.UnitOfWork.run] retries exactly these errors; use this predicate for
    retry loops of your own (a task queue's retry policy, say).

    ```python
    from sqlalchemy.exc import OperationalError

    class SerializationFailure(Exception):
        sqlstate = "40001"

    wrapped = OperationalError("COMMIT", {}, SerializationFailure("could not serialize"))
    assert is_retryable(wrapped)
    assert not is_retryable(ValueError("not a database error"))
    ```
    """
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for attribute in ("sqlstate", "pgcode"):  # psycopg and asyncpg; psycopg2
            if getattr(current, attribute, None) in RETRYABLE_SQLSTATES:
                return True
        for attribute in ("orig", "__cause__"):
            linked = getattr(current, attribute, None)
            if isinstance(linked, BaseException):
                pending.append(linked)
    return False


def check(uow: UnitOfWorkBase, fn: object, retries: object) -> None:
    """Refuse bad arguments, and a call inside an open block, before anything runs."""
    if not callable(fn):
        raise TypeError(f"run() takes a callable, not {type(fn).__name__}")
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise TypeError(f"retries must be an int, not {type(retries).__name__}")
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, not {retries}")
    frames = uow._frames()
    if frames and not getattr(frames[0].session, "_retired", False):
        raise UnitOfWorkError(
            "run() cannot be used inside an open block: it retries a whole transaction, and a "
            "part of one cannot be run again on its own. Call run() outside any `with uow:`"
        )


def _strategy(retries: int) -> dict[str, Any]:
    """The retry strategy, the same for `Retrying` and `AsyncRetrying`."""
    from tenacity import (
        retry_if_exception,
        stop_after_attempt,
        wait_random_exponential,
    )

    return {
        "retry": retry_if_exception(is_retryable),
        "stop": stop_after_attempt(retries + 1),
        "wait": wait_random_exponential(multiplier=_FIRST_WAIT, max=_MAX_WAIT),
        "before_sleep": _log_retry,
        "reraise": True,  # the last error itself, not tenacity's RetryError
    }


def _log_retry(state: Any) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    logger.info(
        "run(): attempt %d of %r failed (%s: %s); retrying",
        state.attempt_number,
        state.fn,
        type(error).__name__,
        error,
    )


def _attempt(
    uow: UnitOfWorkBase,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    bridged: bool,
) -> tuple[Any, list[_Callback]]:
    """One attempt: the block of `with uow:`, returning the result and the callbacks to run."""
    uow._enter()
    try:
        result = fn(*args, **kwargs)
        if bridged and inspect.isawaitable(result):
            result = await_only(result)
    except BaseException:
        uow._exit(True)  # rolls back; a failed attempt's callbacks are dropped with it
        raise
    return result, uow._exit(False)


def run(
    uow: UnitOfWorkBase,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    retries: int,
) -> tuple[Any, list[_Callback]]:
    """Attempt `fn` in a block until it commits, fails otherwise, or runs out of retries."""
    from tenacity import Retrying

    result: tuple[Any, list[_Callback]] = Retrying(**_strategy(retries))(
        _attempt, uow, fn, args, kwargs, False
    )
    return result


async def run_async(
    uow: UnitOfWorkBase,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    retries: int,
) -> tuple[Any, list[_Callback]]:
    """`run` for an AsyncUnitOfWork: each attempt runs in the greenlet bridge."""
    from tenacity import AsyncRetrying

    result: tuple[Any, list[_Callback]] = await AsyncRetrying(**_strategy(retries))(
        greenlet_spawn, _attempt, uow, fn, args, kwargs, True
    )
    return result
