"""Test helpers: count the SQL statements a block runs, capture `on_commit` callbacks.

The pytest plugin (`uow.pytest_plugin`) offers them as fixtures, with a test database and a
rolled-back transaction per test ([`Database.test_transaction`][uow.Database.test_transaction]).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

from uow._memory import AsyncInMemoryDatabase, InMemoryDatabase, InMemorySQLError
from uow.async_unit_of_work import run_callbacks
from uow.unit_of_work import _captured, run_callback

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from uow.async_database import AsyncDatabase
    from uow.database import Database
    from uow.unit_of_work import _Callback

__all__ = [
    "AsyncInMemoryDatabase",
    "InMemoryDatabase",
    "InMemorySQLError",
    "OnCommitCapture",
    "StatementLog",
    "assert_num_statements",
    "capture_on_commit_callbacks",
    "count_statements",
]

_IMPLICIT_BEGIN = frozenset({"BEGIN", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"})


@dataclass
class StatementLog:
    """The statements an engine ran inside [`count_statements`][uow.testing.count_statements]."""

    statements: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many statements ran."""
        return len(self.statements)

    def matching(self, prefix: str) -> list[str]:
        """The statements starting with `prefix` (case-insensitive), e.g. `"SELECT"`."""
        return [s for s in self.statements if s.lstrip().upper().startswith(prefix.upper())]


@contextmanager
def count_statements(engine: Engine) -> Iterator[StatementLog]:
    """Record every statement `engine` sends to the database inside the block.

    The implicit BEGIN of a transaction is not counted (most drivers send it without a cursor);
    SAVEPOINT, RELEASE and ROLLBACK TO are.

    Examples:
        ```python
        with count_statements(db.engine) as log, uow:
            uow.users.first_or_create(email="ada@example.com")
        assert log.count == 1
        ```
    """
    log = StatementLog()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # On SQLite, Database emits BEGIN itself (see uow._sqlite); it is the implicit BEGIN
        # that other drivers send without a cursor, so it is not counted either.
        if statement not in _IMPLICIT_BEGIN:
            log.statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield log
    finally:
        event.remove(engine, "before_cursor_execute", record)


@contextmanager
def assert_num_statements(
    database: Database | AsyncDatabase | Engine | AsyncEngine, expected: int
) -> Iterator[StatementLog]:
    """Fail unless the block sends exactly `expected` statements to `database`.

    Counts as [`count_statements`][uow.testing.count_statements] does (SAVEPOINT and RELEASE
    count; the implicit BEGIN does not), on a Database, an AsyncDatabase or an engine. Inside
    a [test transaction][uow.Database.test_transaction] every outermost `with uow:` block is a
    savepoint: its SAVEPOINT and RELEASE SAVEPOINT are counted too. The failure lists the
    statements, numbered. A block that raises is not checked: its exception propagates.

    Raises:
        AssertionError: another number of statements ran.
        TypeError: `expected` is not a non-negative int (before the block runs).

    Examples:
        ```python
        with assert_num_statements(db, 1), uow:
            uow.users.first(email="ada@example.com")
        ```
    """
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
        raise TypeError(f"expected must be a non-negative int, not {expected!r}")
    engine: Any = getattr(database, "engine", database)
    engine = getattr(engine, "sync_engine", engine)
    with count_statements(engine) as log:
        yield log
    if log.count != expected:
        listed = "".join(
            f"\n  {number}. " + statement.strip().replace("\n", "\n     ")
            for number, statement in enumerate(log.statements, 1)
        )
        noun = "statement" if expected == 1 else "statements"
        raise AssertionError(f"expected {expected} {noun}, {log.count} ran:{listed}")


class OnCommitCapture:
    """The block of [`capture_on_commit_callbacks`][uow.testing.capture_on_commit_callbacks];
    `with` for a Database, `async with` for an AsyncDatabase (which awaits coroutines)."""

    def __init__(self, database: Any, execute: bool) -> None:
        self.database = database
        self.execute = execute
        self.callbacks: list[Callable[[], object]] = []
        self._captured: list[_Callback] = []
        self._previous: list[_Callback] | None = None

    def _start(self) -> list[Callable[[], object]]:
        self._previous = _captured.get(self.database)
        _captured[self.database] = self._captured
        return self.callbacks

    def _stop(self) -> None:
        if self._previous is None:
            _captured.pop(self.database, None)
        else:
            _captured[self.database] = self._previous
        self.callbacks[:] = [callback for callback, _robust in self._captured]

    def __enter__(self) -> list[Callable[[], object]]:
        return self._start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self.execute:
                # Callbacks that commit units of work of their own add to the list: run too.
                for callback, robust in _pending(self._captured):
                    result = run_callback(callback, robust)
                    if inspect.isawaitable(result):
                        close = getattr(result, "close", None)
                        if close is not None:
                            close()
                        raise TypeError(
                            f"on_commit callback {callback!r} returned an awaitable: capture "
                            "an AsyncDatabase's callbacks with `async with`"
                        )
        finally:
            self._stop()

    async def __aenter__(self) -> list[Callable[[], object]]:
        return self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self.execute:
                await run_callbacks(_pending(self._captured))
        finally:
            self._stop()


def _pending(captured: list[_Callback]) -> Iterator[_Callback]:
    index = 0
    while index < len(captured):
        yield captured[index]
        index += 1


def capture_on_commit_callbacks(
    database: Database | AsyncDatabase, *, execute: bool = False
) -> OnCommitCapture:
    """Collect the `on_commit` callbacks that commits of `database` would run in the block.

    Like Django's `captureOnCommitCallbacks`: inside the block, a unit of work's commit (or,
    inside a test transaction, its savepoint release) hands its callbacks to the capture
    instead of running them, from any thread or task. The list it gives is filled when the
    block ends, in the order the callbacks would have run; callbacks of a block that rolled
    back are not in it. With `execute=True` they are run at the end of the block (unless it
    raised), and so are the callbacks their own units of work commit. Use `with` for a
    Database and `async with` for an AsyncDatabase (coroutine callbacks are awaited).

    Examples:
        ```python
        with capture_on_commit_callbacks(db) as callbacks:
            with uow:
                uow.on_commit(send_welcome_mail)
        assert callbacks == [send_welcome_mail]  # captured, not run
        ```
    """
    return OnCommitCapture(database, execute)
