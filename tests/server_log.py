"""Count round trips on the wire: the statements the PostgreSQL server itself logged.

`scripts/with-postgres` starts the server with `log_statement=all` and a line prefix of
`application_name,pid,`, and exports the log's path as UOW_TEST_POSTGRES_LOG. A test gives its
Database a unique application name (`wire_database`) and reads back what the server received
from it, which SQLAlchemy's events cannot show (the BEGIN and COMMIT a driver sends by itself).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import postgres_url
from uow import Database

# "statement: BEGIN" (simple protocol) or "execute <unnamed>: SELECT ..." (extended protocol).
_STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (.*)$", re.DOTALL)


def log_path() -> Path:
    """The server log, or skip (fail when PostgreSQL is required) when there is none."""
    path = os.environ.get("UOW_TEST_POSTGRES_LOG")
    if not path:
        postgres_url()  # skips or fails with the usual reason when there is no server
        pytest.skip("the PostgreSQL server's log is unknown: UOW_TEST_POSTGRES_LOG is unset")
    return Path(path)


def wire_database(**engine_options: Any) -> tuple[Database, str]:
    """A Database on the test server whose connections carry a unique application name."""
    name = f"uow-test-{uuid.uuid4().hex[:12]}"
    options = dict(engine_options)
    options["connect_args"] = {**options.get("connect_args", {}), "application_name": name}
    return Database(postgres_url(), engine_options=options), name


@contextmanager
def server_statements(application_name: str) -> Iterator[list[str]]:
    """The statements the server received from `application_name` inside the block, in order.

    Filled in when the block exits. Statements are stripped, with whitespace runs folded.
    """
    path = log_path()
    start = path.stat().st_size
    statements: list[str] = []
    yield statements
    with path.open("rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", errors="replace")
    statements.extend(_statements(text, application_name))


def _statements(text: str, application_name: str) -> list[str]:
    prefix = f"{application_name},"
    found: list[str] = []
    record: list[str] | None = None
    for line in text.splitlines():
        if "," in line and re.match(r"^[^,]*,\d+,[A-Z]+:  ", line):
            record = None  # a new record starts; continuation lines belong to the last one
            if line.startswith(prefix):
                _, _, rest = line.split(",", 2)
                level, _, message = rest.partition(":  ")
                if level == "LOG":
                    record = [message]
                    found.append("")
        elif record is not None:
            record.append(line)
        if record is not None:
            found[-1] = "\n".join(record)
    statements = []
    for message in found:
        match = _STATEMENT.match(message)
        if match:
            statements.append(" ".join(match.group(1).split()))
    return statements


@contextmanager
def sqlite_statements(db: Database) -> Iterator[list[str]]:
    """The statements SQLite itself ran for `db`'s connections opened inside the block.

    sqlite3's trace callback sees what the library sends directly (BEGIN IMMEDIATE, COMMIT),
    which SQLAlchemy's cursor events do not. Use it on a Database whose pool is still empty.
    """
    statements: list[str] = []

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(lambda sql: statements.append(" ".join(sql.split())))

    event.listen(db.engine.pool, "connect", on_connect)
    try:
        yield statements
    finally:
        event.remove(db.engine.pool, "connect", on_connect)


@pytest.fixture
def wired() -> Iterator[tuple[Database, str]]:
    """A PostgreSQL Database with the test tables, one user and a warm pool, and the
    application name its statements carry in the server log."""
    from tests.conftest import reset_postgres
    from tests.models import AppUnitOfWork, Base

    db, name = wire_database()
    reset_postgres(db)
    db.create_all(Base.metadata)
    with AppUnitOfWork(db) as uow:
        uow.users.create(email="ada@example.com", name="Ada")
    yield db, name
    db.s.remove()
    reset_postgres(db)
    db.dispose()
