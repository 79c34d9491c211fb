"""uow's pytest plugin: a test database, a rolled-back transaction per test, statement counts.

Registered through the `pytest11` entry point, so installing the package is enough. It does
nothing until a test asks for one of its fixtures (all named `uow_...`):

- `uow_database_url` (session): `--uow-database-url`, else the `UOW_TEST_DATABASE_URL`
  environment variable, else a SQLite file in pytest's temporary directory. Override the
  fixture to compute it yourself.
- `uow_metadata` (session): the `MetaData` whose tables are created once per session, from the
  ini option `uow_metadata = package.module:Base.metadata`; None (no tables) without it.
  Override the fixture to return your own.
- `uow_database` (session): the [`Database`][uow.Database] on that URL, tables created.
- `uow_db` (function): `uow_database` inside its
  [`test_transaction()`][uow.Database.test_transaction]: everything the test writes through it
  (units of work, `db.s`, requests of a test client) is rolled back at the end.
- `uow_async_database_url`, `uow_async_database`, `uow_adb`: the same for an
  [`AsyncDatabase`][uow.AsyncDatabase] (the URL defaults to `uow_database_url`; `uow_adb`
  needs pytest-asyncio).
- `uow_assert_num_statements`: [`assert_num_statements`][uow.testing.assert_num_statements].
- `uow_capture_on_commit`:
  [`capture_on_commit_callbacks`][uow.testing.capture_on_commit_callbacks].
"""

from __future__ import annotations

import asyncio
import importlib
import os
import threading
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import MetaData

from uow.async_database import AsyncDatabase
from uow.database import Database
from uow.testing import assert_num_statements, capture_on_commit_callbacks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "uow_adb",
    "uow_assert_num_statements",
    "uow_async_database",
    "uow_async_database_url",
    "uow_capture_on_commit",
    "uow_database",
    "uow_database_url",
    "uow_db",
    "uow_metadata",
]

ENVIRONMENT_VARIABLE = "UOW_TEST_DATABASE_URL"
"""Where `uow_database_url` looks when `--uow-database-url` is not given."""


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register `--uow-database-url` and the ini option `uow_metadata` (nothing else)."""
    group = parser.getgroup("uow", "uow test database")
    group.addoption(
        "--uow-database-url",
        dest="uow_database_url",
        default=None,
        help=f"database URL for the uow_database fixture (else ${ENVIRONMENT_VARIABLE}, "
        "else a SQLite file in pytest's temporary directory)",
    )
    parser.addini(
        "uow_metadata",
        "package.module:attribute of the MetaData whose tables uow_database creates",
        default="",
    )


@pytest.fixture(scope="session")
def uow_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The test database's URL: `--uow-database-url`, `$UOW_TEST_DATABASE_URL`, or a SQLite
    file in pytest's temporary directory."""
    url = request.config.getoption("uow_database_url") or os.environ.get(ENVIRONMENT_VARIABLE)
    if url:
        return str(url)
    return f"sqlite:///{tmp_path_factory.mktemp('uow') / 'test.db'}"


@pytest.fixture(scope="session")
def uow_metadata(request: pytest.FixtureRequest) -> MetaData | None:
    """The MetaData named by the ini option `uow_metadata` (`package.module:Base.metadata`),
    or None: override this fixture to return yours."""
    spec = str(request.config.getini("uow_metadata") or "").strip()
    return _load_metadata(spec) if spec else None


@pytest.fixture(scope="session")
def uow_database(uow_database_url: str, uow_metadata: MetaData | None) -> Iterator[Database]:
    """The session's Database on `uow_database_url`, with the tables of `uow_metadata` created
    (those that do not exist yet; none are dropped). Disposed at the end of the session."""
    database = Database(uow_database_url)
    if uow_metadata is not None:
        database.create_all(uow_metadata)
    yield database
    database.dispose()


@pytest.fixture
def uow_db(uow_database: Database) -> Iterator[Database]:
    """`uow_database` inside a test transaction, rolled back after the test (also a failed
    one)."""
    with uow_database.test_transaction():
        yield uow_database


@pytest.fixture(scope="session")
def uow_async_database_url(uow_database_url: str) -> str:
    """The URL of `uow_async_database`: `uow_database_url` unless overridden (a URL without
    a driver, or `postgresql+psycopg`, serves both)."""
    return uow_database_url


@pytest.fixture(scope="session")
def uow_async_database(
    uow_async_database_url: str, uow_metadata: MetaData | None
) -> Iterator[AsyncDatabase]:
    """The session's AsyncDatabase, tables created. A sync fixture: it works whatever event
    loop each test runs in (the tables are created in a loop of their own)."""
    database = AsyncDatabase(uow_async_database_url)

    async def prepare() -> None:
        if uow_metadata is not None:
            await database.create_all(uow_metadata)
        await database.dispose()  # no connection may outlive its event loop

    _run_in_own_loop(prepare)
    yield database
    _run_in_own_loop(database.dispose)


async def _uow_adb(uow_async_database: AsyncDatabase) -> AsyncIterator[AsyncDatabase]:
    """`uow_async_database` inside a test transaction, rolled back after the test; the pool
    is disposed then too, since each test may run in its own event loop."""
    try:
        async with uow_async_database.test_transaction():
            yield uow_async_database
    finally:
        await uow_async_database.dispose()


def _no_pytest_asyncio() -> None:
    """`uow_adb` needs pytest-asyncio (`pip install pytest-asyncio`)."""
    pytest.fail("the uow_adb fixture needs pytest-asyncio: pip install pytest-asyncio")


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is installed wherever we test
    uow_adb: Any = pytest.fixture(name="uow_adb")(_no_pytest_asyncio)
else:
    uow_adb = pytest_asyncio.fixture(name="uow_adb")(_uow_adb)


@pytest.fixture
def uow_assert_num_statements() -> Callable[..., Any]:
    """[`assert_num_statements`][uow.testing.assert_num_statements], as pytest-django's
    `django_assert_num_queries`: `with uow_assert_num_statements(uow_db, 1): ...`."""
    return assert_num_statements


@pytest.fixture
def uow_capture_on_commit() -> Callable[..., Any]:
    """[`capture_on_commit_callbacks`][uow.testing.capture_on_commit_callbacks]:
    `with uow_capture_on_commit(uow_db) as callbacks: ...`."""
    return capture_on_commit_callbacks


def _load_metadata(spec: str) -> MetaData:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise pytest.UsageError(
            f"uow_metadata = {spec!r}: write it as package.module:attribute, "
            "e.g. myapp.models:Base.metadata"
        )
    try:
        value: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            value = getattr(value, name)
    except (ImportError, AttributeError) as error:
        raise pytest.UsageError(f"uow_metadata = {spec!r}: {error}") from error
    if not isinstance(value, MetaData):
        raise pytest.UsageError(
            f"uow_metadata = {spec!r} is a {type(value).__name__}, not a sqlalchemy MetaData"
        )
    return value


def _run_in_own_loop(function: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion in a new event loop, in a thread of its own (the calling
    thread may have a loop running)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(function())
        except BaseException as error:  # re-raised in the calling thread
            errors.append(error)

    thread = threading.Thread(target=run, name="uow-test-database")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
