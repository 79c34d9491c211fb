"""The context-local session registry behind `db.s`.

SQLAlchemy's `scoped_session` keeps one session per thread. We keep one per *context*
(`contextvars`), which is right for threads and for asyncio tasks alike: a new thread starts with
no session; a task copies its creator's context, so a task created inside a unit of work sees that
session (and must not use it concurrently), while tasks started from a context without a session
each make their own.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.orm import scoped_session

from uow._fork import ProcessLocal
from uow.session import Session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from pydantic import BaseModel
    from sqlalchemy.orm import sessionmaker

__all__ = ["ContextRegistry", "ScopedSession"]

S = TypeVar("S")
M = TypeVar("M")


@dataclass(eq=False, slots=True)
class _Scope(Generic[S]):
    """The sessions opened inside one `ContextRegistry.scope()`, by any context copied from it."""

    opened: list[S] = field(default_factory=list)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def track(self, value: S) -> None:
        with self.lock:  # contexts copied from one scope run in several threads
            self.opened.append(value)


class ContextRegistry(Generic[S]):
    """`scoped_session`'s registry protocol (`__call__`, `has`, `set`, `clear`) over a ContextVar.

    Values are process-local: a forked child never reuses (or closes) a session inherited from
    its parent, whose connection belongs to the parent.

    Each context keeps its own session, always: two threads or tasks never share one, so two
    units of work running at once never share a transaction. `scope()` adds bookkeeping on top:
    a session opened inside it, in the scope's context or in any context copied from it (a
    framework's worker thread), is recorded there, and closed when the scope ends.
    """

    def __init__(self, createfunc: Callable[[], S], name: str) -> None:
        self.createfunc = createfunc
        self._var: ProcessLocal[S | None] = ProcessLocal(name, None)
        self._scope: ProcessLocal[_Scope[S] | None] = ProcessLocal(f"{name}_scope", None)

    def __call__(self) -> S:
        value = self._var.get()
        if value is None:
            value = self.createfunc()
            self._var.set(value)
            scope = self._scope.get()
            # A context copied before the scope ended (a task left running) must not record
            # sessions in a scope that nobody will close again.
            if scope is not None and not scope.closed:
                scope.track(value)
        return value

    def has(self) -> bool:
        return self._var.get() is not None

    def set(self, obj: S) -> None:
        self._var.set(obj)

    def clear(self) -> None:
        self._var.set(None)

    @contextmanager
    def scope(self, close: Callable[[S], object]) -> Iterator[None]:
        """Record every session opened from here on, in this context or copies of it; `close`
        them all at exit. A session the context had before the scope is left alone: it belongs
        to whoever opened it (a `with uow:` block around the scope, say).
        """
        scope: _Scope[S] = _Scope()
        token = self._scope.set(scope)
        try:
            yield
        finally:
            # Exited from another context than the one that entered (an async generator
            # finalised elsewhere): that context's variable is not ours to reset.
            with suppress(ValueError):
                self._scope.reset(token)
            with scope.lock:
                scope.closed = True
                opened, scope.opened = scope.opened, []
            current = self._var.get()
            if current is not None and any(current is value for value in opened):
                self._var.set(None)  # this context must not keep a session closed below
            for value in opened:
                close(value)


class ScopedSession(scoped_session[Session]):
    """`db.s`: a proxy to the current context's session, with our seed helpers proxied too.

    `db.s()` returns the session itself; `db.s.remove()` closes and forgets it (call it at the end
    of every web request or job). Everything `scoped_session` proxies (`execute`, `add`, `get`,
    `scalars`, ...) works as documented by SQLAlchemy.
    """

    def __init__(self, session_factory: sessionmaker[Session], name: str) -> None:
        super().__init__(session_factory)
        self._registry = ContextRegistry(session_factory, name)
        self.registry = self._registry  # type: ignore[assignment]

    def scope(self) -> AbstractContextManager[None]:
        """See [`Database.session_scope`][uow.Database.session_scope]."""
        return self._registry.scope(Session.close)

    def _forget(self) -> None:
        """Forget this context's session without closing it (it belongs to another context:
        a block that ended in the context this one was copied from)."""
        self._registry.clear()

    def _remove_now(self) -> None:
        """`remove()`, as a unit of work's exit calls it."""
        self.remove()

    def all(self, model: type[M], /, **lookups: Any) -> list[M]:
        """Proxy for [`Session.all`][uow.Session.all] on the current session."""
        return self.registry().all(model, **lookups)

    def first(self, model: type[M], /, **lookups: Any) -> M | None:
        """Proxy for [`Session.first`][uow.Session.first] on the current session."""
        return self.registry().first(model, **lookups)

    def create(
        self, model: type[M], data: BaseModel | dict[str, Any] | None = None, /, **attrs: Any
    ) -> M:
        """Proxy for [`Session.create`][uow.Session.create] on the current session."""
        return self.registry().create(model, data, **attrs)

    def first_or_create(
        self, model: type[M], /, defaults: BaseModel | dict[str, Any] | None = None, **attrs: Any
    ) -> M:
        """Proxy for [`Session.first_or_create`][uow.Session.first_or_create]."""
        return self.registry().first_or_create(model, defaults, **attrs)

    def create_or_first(
        self, model: type[M], /, defaults: BaseModel | dict[str, Any] | None = None, **attrs: Any
    ) -> M:
        """Proxy for [`Session.create_or_first`][uow.Session.create_or_first]."""
        return self.registry().create_or_first(model, defaults, **attrs)
