"""Dead pooled connections found at checkout, without a round trip per checkout.

A pooled connection whose server restarted (or failed over, or whose backend was killed) is
dead, and the pool cannot know until it is used: the first unit of work after a restart would
fail. SQLAlchemy's `pool_pre_ping` asks the server at every checkout, which costs a round trip
per unit of work, as much as the one statement of a read-only block. But a server that ends a
session says so on the socket: it sends an error and closes it, so an idle connection's socket
becomes readable. We look (a zero-timeout poll, no I/O) and ping only then; a connection that
fails its ping is replaced before anything runs on it.

Async drivers are looked at through SQLAlchemy's adapter, at the driver's own connection:
async psycopg has the socket's `fileno()` as sync psycopg does. asyncpg reads its socket in
the event loop, so a server's goodbye may already have been read: asyncpg then reports the
connection closed (`is_closed()`); if the loop has not run since, the socket is polled as for
the others.
"""

from __future__ import annotations

import select
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["install", "installed"]

_engines: WeakSet[Engine] = WeakSet()


def installed(engine: Engine) -> bool:
    """Whether `engine`'s pool checks connections' sockets at checkout."""
    return engine in _engines


def install(engine: Engine) -> None:
    """Check each connection's socket at checkout; ping and replace it when it looks dead."""
    dialect = engine.dialect
    _engines.add(engine)

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if not _socket_has_news(dbapi_connection):
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError("the connection failed its ping at checkout") from error
        if not alive:
            raise DisconnectionError("the connection failed its ping at checkout")

    event.listen(engine.pool, "checkout", on_checkout)


def _socket_has_news(dbapi_connection: Any) -> bool:
    """Whether an idle connection's socket is readable, closed, or cannot be asked."""
    # An async driver's connection, behind SQLAlchemy's adapter (AdaptedConnection).
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    try:
        fileno = _fileno(driver)
    except Exception:
        return True  # closed or broken: let the ping decide
    poller = select.poll()  # not select(): file descriptors may be above 1024
    poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _fileno(driver_connection: Any) -> int:
    """The socket's file descriptor; raises when the connection is known to be closed."""
    if hasattr(driver_connection, "fileno"):  # psycopg (sync and async), psycopg2
        return int(driver_connection.fileno())
    if driver_connection.is_closed():  # asyncpg: the event loop saw the server close it
        raise ConnectionError("closed")
    # asyncpg has no public fileno(): its asyncio transport knows the socket.
    return int(driver_connection._transport.get_extra_info("socket").fileno())
