"""Fixtures: a fresh database per test, on SQLite and on PostgreSQL.

PostgreSQL comes from UOW_TEST_POSTGRES_URL (set by scripts/with-postgres, which `make test`
uses). Without it the PostgreSQL tests skip, unless UOW_REQUIRE_POSTGRES=1, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.models import AppUnitOfWork, Base
from uow import Database

# Fixtures of tests/server_log.py (`wired`), for the tests that count statements on the wire.
pytest_plugins = ["tests.server_log"]

POSTGRES_URL = os.environ.get("UOW_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("UOW_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgresql"]


def postgres_url() -> str:
    """The PostgreSQL URL, or skip (fail when required) if there is none."""
    if POSTGRES_URL:
        return POSTGRES_URL
    reason = (
        "no PostgreSQL server: UOW_TEST_POSTGRES_URL is unset (run the suite with "
        "`make test`, which starts one, or scripts/with-postgres)"
    )
    if REQUIRE_POSTGRES:
        pytest.fail(f"UOW_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def make_database(backend: str, tmp_path: Path) -> Database:
    if backend == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'test.db'}")
    return Database(postgres_url())


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def fresh_database(backend: str, path: Path) -> Iterator[Database]:
    """A Database with the test tables created empty; dropped and disposed afterwards."""
    database = make_database(backend, path)
    if backend == "postgresql":
        reset_postgres(database)
    database.create_all(Base.metadata)
    try:
        yield database
    finally:
        database.s.remove()
        if backend == "postgresql":
            reset_postgres(database)
        database.dispose()


@pytest.fixture
def db(backend: str, tmp_path: Path) -> Iterator[Database]:
    """A fresh Database per test, on each backend."""
    with fresh_database(backend, tmp_path) as database:
        yield database


def reset_postgres(database: Database) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))


@pytest.fixture
def uow(db: Database) -> AppUnitOfWork:
    return AppUnitOfWork(db)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a throwaway Redis server, started once per test run (see tests/redis_server)."""
    from tests.redis_server import running_redis

    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url
