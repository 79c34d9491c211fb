"""Behind a connection pooler in transaction pooling mode (PgBouncer's `pool_mode = transaction`).

Such a pooler lends a server connection to a client for one transaction at a time; between
transactions, and for each statement run outside one, the client may get another server
connection. Whatever a driver leaves on a server connection for later is then lost or met by
another client: a prepared statement above all. So, for `transaction_pooling=True`:

- psycopg 3 (sync and async) prepares a query it has run five times (`prepare_threshold`):
  never (`prepare_threshold=None`), and each statement goes out as one Parse/Bind/Execute/Sync
  exchange, which a pooler keeps on one server connection. Lazy BEGIN stays.
- asyncpg prepares every statement under SQLAlchemy's adapter, and prepares it (a round trip)
  before it executes it (another): two exchanges that, outside a transaction, may reach two
  server connections. Its caches are turned off (`statement_cache_size=0` for asyncpg's,
  `prepared_statement_cache_size=0` for the adapter's), each statement is PostgreSQL's unnamed
  statement (SQLAlchemy's `prepared_statement_name_func`), which the next statement replaces,
  so none is left behind on a server connection (asyncpg closes a named one only at its next
  statement, which may go to another server connection), and BEGIN is eager: a statement's two
  exchanges then run inside one transaction, on the one server connection it holds.
- psycopg2 interpolates parameters on the client and prepares nothing: nothing to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["configure"]


def configure(url: URL, options: dict[str, Any]) -> bool:
    """Complete `options` (in place) for a pooler in transaction pooling mode; return whether
    lazy BEGIN stays possible on this driver.

    Raises:
        ValueError: `url` is not a PostgreSQL URL (SQLite has no server to pool).
    """
    if url.get_backend_name() != "postgresql":
        raise ValueError(
            "transaction_pooling is for PostgreSQL behind a pooler such as PgBouncer in "
            f"transaction pooling mode, not for {url.get_backend_name()!r} URLs"
        )
    connect_args = dict(options.get("connect_args") or {})
    driver = url.get_driver_name()
    lazy = True
    if driver in ("psycopg", "psycopg_async"):
        connect_args.setdefault("prepare_threshold", None)
    elif driver == "asyncpg":
        connect_args.setdefault("statement_cache_size", 0)
        connect_args.setdefault("prepared_statement_cache_size", 0)
        connect_args.setdefault("prepared_statement_name_func", _unnamed_statement)
        lazy = False
    options["connect_args"] = connect_args
    return lazy


def _unnamed_statement() -> str:
    """The name of PostgreSQL's unnamed statement, which the next statement replaces."""
    return ""
