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
