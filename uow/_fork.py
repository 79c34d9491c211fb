"""Fork safety: a forked child must not use (or close) its parent's pooled connections."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING
from weakref import WeakSet

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

_engines: WeakSet[Engine] = WeakSet()
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
