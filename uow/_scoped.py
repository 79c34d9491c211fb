"""The context-local session registry behind `db.s`.

SQLAlchemy's `scoped_session` keeps one session per thread. We keep one per *context*
(`contextvars`), which is right for threads and for asyncio tasks alike: a new thread starts with
no session; a task copies its creator's context, so a task created inside a unit of work sees that
session (and must not use it concurrently), while tasks started from a context without a session
each make their own.
"""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy.orm import scoped_session

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
    """One session slot shared by every context copied from inside `ContextRegistry.scope()`."""

    pid: int
    value: S | None = None
    inherited: S | None = None  # the context's session when the scope began: not ours to close
    lock: threading.Lock = field(default_factory=threading.Lock)


class ContextRegistry(Generic[S]):
    """`scoped_session`'s registry protocol (`__call__`, `has`, `set`, `clear`) over a ContextVar.

    The stored value records the process id: a forked child never reuses (or closes) a session
    inherited from its parent, whose connection belongs to the parent.

    Inside `scope()` the session lives in a mutable slot instead, which contexts copied from the
    scope share: a sync endpoint that a web framework runs in a worker thread (with a *copy* of
    the request's context) then stores its session where the request's end can close it.
    """

    def __init__(self, createfunc: Callable[[], S], name: str) -> None:
        self.createfunc = createfunc
        self._var: ContextVar[tuple[int, S] | None] = ContextVar(name, default=None)
        self._scope: ContextVar[_Scope[S] | None] = ContextVar(f"{name}_scope", default=None)

    def _active_scope(self) -> _Scope[S] | None:
        scope = self._scope.get()
        if scope is None or scope.pid != os.getpid():
            return None
        return scope

    def __call__(self) -> S:
        scope = self._active_scope()
        if scope is not None:
            if scope.value is None:
                # Threads copied from one scope may all use `db.s` first at the same moment:
                # exactly one session must be made, or the others would never be closed.
                with scope.lock:
                    if scope.value is None:
                        scope.value = self.createfunc()
            return scope.value
        value = self._get()
        if value is None:
            value = self.createfunc()
            self._var.set((os.getpid(), value))
        return value

    def _get(self) -> S | None:
        stored = self._var.get()
        if stored is None or stored[0] != os.getpid():
            return None
        return stored[1]

    def has(self) -> bool:
        scope = self._active_scope()
        if scope is not None:
            return scope.value is not None
        return self._get() is not None

    def set(self, obj: S) -> None:
        scope = self._active_scope()
        if scope is not None:
            scope.value = obj
        else:
            self._var.set((os.getpid(), obj))

    def clear(self) -> None:
        scope = self._active_scope()
        if scope is not None:
            if scope.value is not None and scope.value is scope.inherited:
                self._var.set(None)  # removed: the context must not get it back after the scope
            scope.value = None
        else:
            self._var.set(None)

    @contextmanager
    def scope(self, close: Callable[[S], object]) -> Iterator[None]:
        """Share one slot with every context copied from here on; `close` its value at exit.

        A session the context already had (inside `with uow:`, say) is shared, not replaced,
        and is left open at exit: it belongs to whoever opened it.
        """
        current = self._active_scope()
        existing = current.value if current is not None else self._get()
        scope: _Scope[S] = _Scope(os.getpid(), value=existing, inherited=existing)
        token = self._scope.set(scope)
        try:
            yield
        finally:
            # Exited from another context than the one that entered (an async generator
            # finalised elsewhere): that context's variable is not ours to reset.
            with suppress(ValueError):
                self._scope.reset(token)
            value, scope.value = scope.value, None
            if value is not None and value is not scope.inherited:
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
