"""Fork safety: a forked child must not use (or close) its parent's pooled connections."""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Generic, TypeVar
from weakref import WeakSet

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

T = TypeVar("T")

_engines: WeakSet[Engine] = WeakSet()

# This process's id, kept up to date in forked children: read on every unit-of-work step, where
# os.getpid() would be a system call each time.
_pid = os.getpid()


def _note_new_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_note_new_pid)
_lock = threading.Lock()
_hook_installed = False


def _drop_inherited_connections() -> None:
    # close=False: the parent still owns those sockets/files; closing them here would end (or
    # roll back) the parent's work. The child simply starts a fresh pool.
    for engine in list(_engines):
        engine.dispose(close=False)


def make_fork_safe(engine: Engine) -> None:
    """Have `engine` drop its inherited pool in every child forked from now on.

    One process-wide `os.register_at_fork` hook serves every engine; engines are held weakly, so
    a disposed and forgotten Database does not live forever.
    """
    global _hook_installed
    with _lock:
        _engines.add(engine)
        if not _hook_installed:
            os.register_at_fork(after_in_child=_drop_inherited_connections)
            _hook_installed = True


class ProcessLocal(Generic[T]):
    """A ContextVar whose value belongs to the process that set it.

    A forked child inherits its parent's contexts, and with them the parent's sessions and
    unit-of-work frames, whose connections belong to the parent. Read in the child, a value set
    by another process is the default: the child starts with no session and no open block.
    """

    __slots__ = ("_default", "_var")

    def __init__(self, name: str, default: T) -> None:
        self._default = default
        self._var: ContextVar[tuple[int, T] | None] = ContextVar(name, default=None)

    def get(self) -> T:
        """The value this process set in this context, else the default."""
        stored = self._var.get()
        if stored is None or stored[0] != _pid:
            return self._default
        return stored[1]

    def set(self, value: T) -> Token[tuple[int, T] | None]:
        """Set the value for this context, in this process."""
        return self._var.set((_pid, value))

    def reset(self, token: Token[tuple[int, T] | None]) -> None:
        """Undo a `set` (ValueError when `token` was made in another context)."""
        self._var.reset(token)
