"""Test helpers: count the SQL statements an engine runs."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

__all__ = ["StatementLog", "count_statements"]

_IMPLICIT_BEGIN = frozenset({"BEGIN", "BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"})


@dataclass
class StatementLog:
    """The statements an engine ran inside [`count_statements`][uow.testing.count_statements]."""

    statements: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many statements ran."""
        return len(self.statements)

    def matching(self, prefix: str) -> list[str]:
        """The statements starting with `prefix` (case-insensitive), e.g. `"SELECT"`."""
        return [s for s in self.statements if s.lstrip().upper().startswith(prefix.upper())]


@contextmanager
def count_statements(engine: Engine) -> Iterator[StatementLog]:
    """Record every statement `engine` sends to the database inside the block.

    The implicit BEGIN of a transaction is not counted (most drivers send it without a cursor);
    SAVEPOINT, RELEASE and ROLLBACK TO are.

    Examples:
        ```python
        with count_statements(db.engine) as log, uow:
            uow.users.first_or_create(email="ada@example.com")
        assert log.count == 1
        ```
    """
    log = StatementLog()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # On SQLite, Database emits BEGIN itself (see uow._sqlite); it is the implicit BEGIN
        # that other drivers send without a cursor, so it is not counted either.
        if statement not in _IMPLICIT_BEGIN:
            log.statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield log
    finally:
        event.remove(engine, "before_cursor_execute", record)
