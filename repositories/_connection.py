"""What the session side records on a connection, for the repositories to read.

With lazy BEGIN (see `uow._begin`) a transaction's statements run without an open server
transaction until the first write. The repositories ask whether that has happened: before the
first write there is no earlier work a SAVEPOINT would have to protect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["BEGUN", "LAZY", "has_written"]

# connection.info keys. LAZY: the engine begins server transactions lazily. BEGUN: the current
# transaction has begun on the server (its first write has been sent, or is being sent).
LAZY = "uow_lazy_begin"
BEGUN = "uow_begun_on_server"


def has_written(connection: Connection) -> bool:
    """Whether the current transaction may hold writes: True unless lazy BEGIN says it has not
    begun on the server yet (an engine without lazy BEGIN cannot tell, so it says True)."""
    info = connection.info
    return not info.get(LAZY, False) or bool(info.get(BEGUN, False))
