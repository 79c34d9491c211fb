"""A Session subclass that overrides how statements run (a cache in `get`, a tenant filter in
`execute`) still sees the repositories' statements: the shortcuts the repositories take for
plain models' reads and one-row inserts (repositories/_streaming.py) are for sessions that run
statements as SQLAlchemy's own Session does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from repositories import Repository
from tests.models import Base, User


class Tracing(Session):
    """Records the calls of its overrides; otherwise SQLAlchemy's Session."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("get")
        return super().get(*args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("execute")
        return super().execute(*args, **kwargs)

    def scalars(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("scalars")
        return super().scalars(*args, **kwargs)


@pytest.fixture
def session(tmp_path: Path) -> Any:
    engine = create_engine(f"sqlite:///{tmp_path / 'subclass.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as seed, seed.begin():
        seed.add(User(id=1, email="ada@example.com", name="Ada"))
    with Tracing(engine) as tracing:
        yield tracing
    engine.dispose()


def test_get_goes_through_the_sessions_own_get(session: Tracing) -> None:
    assert Repository(session, User).get(1).name == "Ada"
    assert "get" in session.calls


def test_first_goes_through_the_sessions_own_statement_methods(session: Tracing) -> None:
    assert Repository(session, User).first(email="ada@example.com").name == "Ada"
    assert {"execute", "scalars"} & set(session.calls)


def test_a_get_or_create_miss_goes_through_the_sessions_own_execute(session: Tracing) -> None:
    created = Repository(session, User).first_or_create(
        email="grace@example.com", defaults={"name": "Grace"}
    )
    assert created.name == "Grace"
    assert session.calls.count("execute") + session.calls.count("scalars") >= 2  # read, insert


def test_the_librarys_own_sessions_keep_the_shortcuts() -> None:
    # The sync session of a Database, and the one inside an AsyncDatabase's AsyncSession (whose
    # `execute` only guards against implicit I/O outside the greenlet bridge).
    from repositories._streaming import _runs_statements_as_sqlalchemy
    from uow.async_session import _BridgedSession
    from uow.session import Session as UowSession

    assert _runs_statements_as_sqlalchemy(UowSession)
    assert _runs_statements_as_sqlalchemy(_BridgedSession)
    assert not _runs_statements_as_sqlalchemy(Tracing)
