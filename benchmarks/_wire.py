"""Round trips on the wire: the statements the PostgreSQL server logged for each client.

`scripts/with-postgres` runs the server with `log_statement=all` and a line prefix of
`application_name,pid,`, and exports the log's path as UOW_TEST_POSTGRES_LOG. Each of the
benchmark's clients connects under its own application_name (_common.Setup), so one run of an
operation shows exactly what each sent, BEGIN and COMMIT included (the driver sends those by
itself, where SQLAlchemy's events cannot see them).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

# "statement: BEGIN" (simple protocol) or "execute <unnamed>: SELECT ..." (extended protocol).
_STATEMENT = re.compile(r"^([^,]*),\d+,LOG:  (?:statement|execute [^:]*): ", re.MULTILINE)
CLIENTS = {
    "raw": "bench-raw",
    "plain": "bench-plain",
    "project": "bench-project",
    "async plain": "bench-async-plain",
    "async project": "bench-async-project",
}


def round_trips(pgconns: Callable[[], list[Any]], fn: Callable[[], Any]) -> int:
    """How many network round trips `fn()` took on the psycopg connections `pgconns()` names
    once `fn` has run (libpq's own protocol trace: each run of messages the client sent before
    the server's answers is one round trip)."""
    from psycopg import pq

    with tempfile.TemporaryFile("w+") as trace:
        traced: list[Any] = []

        def start(pgconn: Any) -> None:
            pgconn.trace(trace.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            traced.append(pgconn)

        for pgconn in pgconns():
            start(pgconn)
        try:
            fn()
        finally:
            for pgconn in traced:
                pgconn.untrace()
        trace.seek(0)
        lines = trace.read().splitlines()
    directions = [line[0] for line in lines if line[:2] in ("F\t", "B\t")]
    pairs = zip(["B", *directions], directions, strict=False)
    return sum(1 for before, now in pairs if now == "F" and before != "F")


def pooled_pgconns(engine: Any) -> Callable[[], list[Any]]:
    """The libpq connections of every connection in `engine`'s pool (checked in)."""

    def pgconns() -> list[Any]:
        pool = engine.pool
        return [record.dbapi_connection.pgconn for record in list(pool._pool.queue)]

    return pgconns


def server_log() -> Path | None:
    """The server's statement log, when the server was started by scripts/with-postgres."""
    path = os.environ.get("UOW_TEST_POSTGRES_LOG")
    return Path(path) if path and Path(path).exists() else None


def statements(log: Path, client: str, fn: Callable[[], Any]) -> int:
    """How many statements the server received from `client` while `fn()` ran."""
    start = log.stat().st_size
    fn()
    return sent_since(log, start, client)


def sent_since(log: Path, start: int, client: str) -> int:
    """How many statements the server received from `client` since the log was `start` bytes
    long (`log.stat().st_size` before the operation)."""
    with log.open("rb") as file:
        file.seek(start)
        text = file.read().decode("utf-8", errors="replace")
    name = CLIENTS[client]
    return sum(1 for match in _STATEMENT.finditer(text) if match.group(1) == name)
