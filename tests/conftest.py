"""Fixtures: a fresh database per test, on SQLite and on PostgreSQL, through either API.

PostgreSQL comes from UOW_TEST_POSTGRES_URL (set by scripts/with-postgres, which `make test`
uses). Without it the PostgreSQL tests skip, unless UOW_REQUIRE_POSTGRES=1, where they fail.

A test that uses `backend` (or `db`, `uow`) runs once per backend: `[sqlite]`, `[postgresql]`.
A module marked `pytestmark = pytest.mark.both_faces` runs its tests on the async face too, once
per async driver, through the sync facade of tests/async_facade.py: `[sqlite-sync]`,
`[sqlite-aiosqlite]`, `[postgresql-sync]`, `[postgresql-asyncpg]`,
`[postgresql-psycopg-async]`. A test of such a module marked `sync_only(reason)` keeps to the
sync face (it uses threads, or the sync classes themselves); one marked
`xfail_face("asyncpg", reason=...)` is a known failure on that face (a strict xfail).

A both_faces module also marked `through_pgbouncer` runs on PostgreSQL through a PgBouncer in
transaction pooling mode too (tests/pgbouncer_server.py), on every face: `[pgbouncer-sync]`,
`[pgbouncer-asyncpg]`, `[pgbouncer-psycopg-async]`. There `backend` is "postgresql" and the
Database is built with `transaction_pooling=True`. These items carry the `pgbouncer` mark
(`-m "not pgbouncer"` leaves them out); a test that cannot run through a pooler (it reads the
server's statement log, say) is marked `direct_only(reason)`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.async_facade import (
    ASYNC_FACES,
    Bridge,
    FacadeDatabase,
    async_url,
    facade_database,
    facade_unit_of_work,
    sync_constructors,
)
from tests.models import AppUnitOfWork, Base
from uow import AsyncDatabase, Database

# Fixtures of tests/server_log.py (`wired`), for the tests that count statements on the wire.
pytest_plugins = ["tests.server_log"]

POSTGRES_URL = os.environ.get("UOW_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("UOW_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgresql"]
# The stacks a `both_faces` test runs on: "<backend>-<face>", the face "sync" or an async driver.
STACKS = [f"{backend}-{face}" for backend in BACKENDS for face in ("sync", *ASYNC_FACES[backend])]
# The same through PgBouncer (transaction pooling), for a module marked `through_pgbouncer`.
POOLED_STACKS = [f"pgbouncer-{face}" for face in ("sync", *ASYNC_FACES["postgresql"])]

# The event loop an async-face test runs on (set by `db`, used by pytest_pyfunc_call).
BRIDGE = pytest.StashKey[Bridge]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "both_faces: run the module's backend tests on the async face too, once per async "
        "driver, through tests/async_facade.py",
    )
    config.addinivalue_line(
        "markers", "sync_only(reason): in a both_faces module, run this test on the sync face only"
    )
    config.addinivalue_line(
        "markers",
        "xfail_face(*faces, reason): a known failure on these faces (xfail, strict), e.g. "
        '@pytest.mark.xfail_face("asyncpg", reason="...")',
    )
    config.addinivalue_line(
        "markers",
        "through_pgbouncer: in a both_faces module, run the PostgreSQL tests through PgBouncer "
        "(transaction pooling) too",
    )
    config.addinivalue_line(
        "markers", "pgbouncer: runs through PgBouncer (set on the items of through_pgbouncer)"
    )
    config.addinivalue_line(
        "markers", "direct_only(reason): in a through_pgbouncer module, never through PgBouncer"
    )


def stack_face(item: pytest.Item) -> str:
    """The face a test item runs on: "sync", or an async driver (see STACKS)."""
    callspec = getattr(item, "callspec", None)
    stack = str(callspec.params.get("backend", "")) if callspec is not None else ""
    return stack.partition("-")[2] or "sync"


def stack_pooled(item: pytest.Item) -> bool:
    """Whether a test item runs through PgBouncer (a POOLED_STACKS stack)."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and str(callspec.params.get("backend", "")).startswith("pgbouncer")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Turn `xfail_face` marks into strict xfails on the items of the faces they name; mark
    the items that run through PgBouncer."""
    for item in items:
        if stack_pooled(item):
            item.add_marker(pytest.mark.pgbouncer)
        face = stack_face(item)
        for mark in item.iter_markers("xfail_face"):
            if face in mark.args:
                item.add_marker(pytest.mark.xfail(strict=True, reason=mark.kwargs["reason"]))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `backend`: by backend, or by backend and face in a both_faces module.

    A test that parametrises `backend` itself (`@pytest.mark.parametrize("backend",
    ["postgresql"], indirect=True)`) keeps its own values, on the sync face.
    """
    if "backend" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "backend" in (names.replace(" ", "").split(",") if isinstance(names, str) else names):
            return
    definition = metafunc.definition
    both = definition.get_closest_marker("both_faces") is not None
    if definition.get_closest_marker("sync_only") or inspect.iscoroutinefunction(metafunc.function):
        both = False  # an `async def` test is async already
    stacks = STACKS if both else BACKENDS
    if (
        both
        and definition.get_closest_marker("through_pgbouncer") is not None
        and definition.get_closest_marker("direct_only") is None
    ):
        stacks = [*stacks, *POOLED_STACKS]
    metafunc.parametrize("backend", stacks, indirect=True)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an async-face test's body in the greenlet bridge, on its event loop."""
    bridge = pyfuncitem.stash.get(BRIDGE, None)
    if bridge is None:
        return None
    names = pyfuncitem._fixtureinfo.argnames
    bridge.run_test(pyfuncitem.obj, **{name: pyfuncitem.funcargs[name] for name in names})
    return True


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    """On an async face, a fixture of the test's own module runs in the bridge, as the test
    does: it may use `db` and `uow` (their facades) as it does on the sync face."""
    bridge = request.node.stash.get(BRIDGE, None)
    function = fixturedef.func
    module = getattr(request.node, "module", None)
    if bridge is None or module is None or function.__module__ != module.__name__:
        return (yield)
    fixturedef.func = bridge.bridged_fixture(function)  # type: ignore[misc]
    try:
        return (yield)
    finally:
        fixturedef.func = function  # type: ignore[misc]


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


def make_database(backend: str, tmp_path: Path, pooled_url: str | None = None) -> Database:
    if backend == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'test.db'}")
    if pooled_url is not None:
        return Database(pooled_url, transaction_pooling=True)
    return Database(postgres_url())


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database: "sqlite" or "postgresql" (parametrised by pytest_generate_tests; through
    PgBouncer too, it is "postgresql")."""
    backend = str(request.param).split("-", 1)[0]
    return "postgresql" if backend == "pgbouncer" else backend


@pytest.fixture
def face(request: pytest.FixtureRequest) -> str:
    """The API a test goes through: "sync", or the async driver ("aiosqlite", "asyncpg",
    "psycopg-async") of a both_faces test."""
    return stack_face(request.node)


@contextmanager
def fresh_database(backend: str, path: Path, pooled_url: str | None = None) -> Iterator[Database]:
    """A Database with the test tables created empty; dropped and disposed afterwards (through
    the PgBouncer at `pooled_url`, if given)."""
    database = make_database(backend, path, pooled_url)
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
def db(
    backend: str,
    face: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Database | FacadeDatabase]:
    """A fresh Database per test, on each backend; on an async face, the sync facade of an
    AsyncDatabase over the same database, whose test body runs on its own event loop (and
    whose `UnitOfWork(db)` builds an AsyncUnitOfWork's facade)."""
    pooled_url = request.getfixturevalue("pgbouncer_url") if stack_pooled(request.node) else None
    if pooled_url is not None:
        from tests.pgbouncer_server import open_every_server_connection

        open_every_server_connection(pooled_url)  # so that consecutive statements rotate
    with fresh_database(backend, tmp_path, pooled_url) as database:
        if face == "sync":
            yield database
            return
        bridge = Bridge()
        url = async_url(database.url.render_as_string(hide_password=False), face)
        facade = facade_database(url, transaction_pooling=pooled_url is not None)
        request.node.stash[BRIDGE] = bridge
        for name, construct in sync_constructors(vars(request.module)).items():
            monkeypatch.setattr(request.module, name, construct)
        try:
            yield facade
        finally:
            try:
                bridge.run(_close(facade.target))
            finally:
                bridge.close()


async def _close(database: AsyncDatabase) -> None:
    await database.s.remove()
    await database.dispose()


def reset_postgres(database: Database) -> None:
    with database.engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))


@pytest.fixture
def uow(db: Database | FacadeDatabase, face: str) -> AppUnitOfWork:
    """The tests' unit of work over `db`; on an async face, an AsyncAppUnitOfWork's facade."""
    if isinstance(db, FacadeDatabase):
        return facade_unit_of_work(db)  # type: ignore[return-value]  # its sync face
    return AppUnitOfWork(db)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a throwaway Redis server, started once per test run (see tests/redis_server)."""
    from tests.redis_server import running_redis

    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def pgbouncer_url() -> Iterator[str]:
    """The URL of a throwaway PgBouncer (transaction pooling) in front of the test PostgreSQL,
    started once per test run (see tests/pgbouncer_server)."""
    from tests.pgbouncer_server import running_pgbouncer

    with running_pgbouncer(postgres_url()) as url:
        yield url
