"""uow's pytest plugin, run by pytest itself (`pytester`): real test files, real runs, in a
subprocess (our own conftest and its plugins stay out of the runs).

Where the package's `pytest11` entry point is installed, pytest loads the plugin by itself;
otherwise (an install from before the entry point existed) the runs name it with `-p`.
"""

from __future__ import annotations

import configparser
from importlib.metadata import entry_points
from pathlib import Path

import psycopg  # noqa: F401  (imported here, before pytester: see below)
import pytest

from tests.conftest import postgres_url, reset_postgres
from uow import Database

pytest_plugins = ["pytester"]
# pytester puts sys.modules back as it was after each test. A driver first imported inside a
# test would be imported anew after it, while its C extension keeps raising the first import's
# exception classes, which SQLAlchemy then no longer wraps: later tests of the same run would
# see raw psycopg errors (test_replicas did, run right after this module). Hence psycopg above.

ROOT = Path(__file__).resolve().parents[2]

INSTALLED = any(point.value == "uow.pytest_plugin" for point in entry_points(group="pytest11"))
PLUGIN_ARGS = () if INSTALLED else ("-p", "uow.pytest_plugin")

MODELS = """
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import AsyncRepository, Repository
from uow import AsyncUnitOfWork, UnitOfWork


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "plugin_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


class AppUnitOfWork(UnitOfWork):
    users: Repository[User]


class AsyncAppUnitOfWork(AsyncUnitOfWork):
    users: AsyncRepository[User]
"""

INI = """
[pytest]
uow_metadata = models:Base.metadata
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(models=MODELS)
    pytester.makeini(INI)
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", *args)


def test_setup_cfg_registers_the_plugin_under_pytest11() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["options.entry_points"]["pytest11"].split() == ["uow", "=", "uow.pytest_plugin"]


def test_each_test_runs_in_a_transaction_rolled_back_after_it_even_after_a_failure(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_users="""
        import pytest
        from models import AppUnitOfWork, User

        def test_1_creates(uow_db):
            uow = AppUnitOfWork(uow_db)
            with uow:
                uow.users.create(email="ada@example.com")
            with uow:
                assert uow.users.count() == 1

        def test_2_fails_after_writing(uow_db):
            uow = AppUnitOfWork(uow_db)
            with uow:
                uow.users.create(email="bob@example.com")
            assert False, "a failing test"

        def test_3_sees_nothing_of_the_others(uow_db):
            with AppUnitOfWork(uow_db) as uow:
                assert uow.users.count() == 0
                uow.users.create(email="ada@example.com")  # no unique violation

        def test_4_counts_statements(uow_db, uow_assert_num_statements):
            uow = AppUnitOfWork(uow_db)
            with uow_assert_num_statements(uow_db, 3), uow:  # SAVEPOINT, SELECT, RELEASE
                uow.users.count()

        def test_5_the_failure_lists_the_statements(uow_db, uow_assert_num_statements):
            uow = AppUnitOfWork(uow_db)
            with uow_assert_num_statements(uow_db, 1), uow:
                uow.users.count()

        def test_6_captures_on_commit_callbacks(uow_db, uow_capture_on_commit):
            uow = AppUnitOfWork(uow_db)
            ran = []
            with uow_capture_on_commit(uow_db) as callbacks:
                with uow:
                    uow.on_commit(lambda: ran.append(1))
            assert ran == [] and len(callbacks) == 1
            with uow_capture_on_commit(uow_db, execute=True):
                with uow:
                    uow.on_commit(lambda: ran.append(2))
            assert ran == [2]

        def test_7_the_session_database_is_shared(uow_database, uow_db):
            assert uow_db is uow_database
        """
    )
    result = run(pytester, "-v")
    result.assert_outcomes(passed=5, failed=2)
    result.stdout.fnmatch_lines(["*test_2_fails_after_writing FAILED*"])
    result.stdout.fnmatch_lines(
        ["*expected 1 statement, 3 ran:*", "*1. SAVEPOINT*", "*2. SELECT count(*)*", "*3. RELEASE*"]
    )


def test_async_fixtures_with_pytest_asyncio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_async="""
        from models import AsyncAppUnitOfWork

        async def test_1_creates(uow_adb):
            uow = AsyncAppUnitOfWork(uow_adb)
            async with uow:
                await uow.users.create(email="ada@example.com")
            async with uow:
                assert await uow.users.count() == 1

        async def test_2_sees_nothing(uow_adb, uow_capture_on_commit):
            uow = AsyncAppUnitOfWork(uow_adb)
            ran = []

            async def notify():
                ran.append(1)

            async with uow_capture_on_commit(uow_adb, execute=True):
                async with uow:
                    assert await uow.users.count() == 0
                    await uow.users.create(email="ada@example.com")
                    uow.on_commit(notify)
            assert ran == [1]
        """
    )
    run(pytester).assert_outcomes(passed=2)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_database_url_from_the_option_or_the_environment(
    pytester: pytest.Pytester, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'chosen.db'}"
    pytester.makepyfile(
        test_url=f"""
        def test_url(uow_database):
            assert uow_database.url.render_as_string() == {url!r}
        """
    )
    if how == "environment":
        monkeypatch.setenv("UOW_TEST_DATABASE_URL", url)
        result = run(pytester)
    else:
        monkeypatch.delenv("UOW_TEST_DATABASE_URL", raising=False)
        result = run(pytester, f"--uow-database-url={url}")
    result.assert_outcomes(passed=1)
    assert (tmp_path / "chosen.db").exists()  # and its tables were created there
    chosen = Database(url)
    try:
        with chosen.engine.connect() as connection:
            tables = connection.exec_driver_sql("SELECT name FROM sqlite_master").scalars().all()
    finally:
        chosen.dispose()
    assert "plugin_users" in tables


def test_on_postgresql(pytester: pytest.Pytester) -> None:
    url = postgres_url()
    database = Database(url)
    reset_postgres(database)
    try:
        pytester.makepyfile(
            test_pg="""
            from models import AppUnitOfWork, AsyncAppUnitOfWork

            def test_sync(uow_db):
                assert uow_db.url.get_backend_name() == "postgresql"
                with AppUnitOfWork(uow_db) as uow:
                    uow.users.create(email="ada@example.com")

            async def test_async(uow_adb):
                async with AsyncAppUnitOfWork(uow_adb) as uow:
                    assert await uow.users.count() == 0
                    await uow.users.create(email="ada@example.com")
            """
        )
        run(pytester, f"--uow-database-url={url}").assert_outcomes(passed=2)
        with database.engine.connect() as connection:
            count = connection.exec_driver_sql("SELECT count(*) FROM plugin_users").scalar()
        assert count == 0  # the table was created, and nothing was committed
    finally:
        reset_postgres(database)
        database.dispose()


def test_fixtures_the_user_overrides(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makeconftest(
        f"""
        import pytest
        from models import Base

        @pytest.fixture(scope="session")
        def uow_database_url():
            return "sqlite:///{tmp_path / "own.db"}"

        @pytest.fixture(scope="session")
        def uow_metadata():
            return Base.metadata
        """
    )
    pytester.makepyfile(
        test_own="""
        from models import AppUnitOfWork

        def test_own(uow_db):
            assert uow_db.url.database.endswith("own.db")
            with AppUnitOfWork(uow_db) as uow:
                assert uow.users.count() == 0
        """
    )
    pytester.makepyfile(models=MODELS)
    pytester.makeini("[pytest]\n")  # no uow_metadata: the fixture gives it
    pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_bad_uow_metadata_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(uow_database): pass")
    pytester.makepyfile(models=MODELS)
    pytester.makeini("[pytest]\nuow_metadata = models:User\n")
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*uow_metadata = 'models:User' is a *, not a sqlalchemy MetaData*"]
    )


def test_inert_until_its_fixtures_are_used(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_plain(request):
            assert request.config.getoption("uow_database_url") is None
            assert "uow.pytest_plugin" in sys.modules
        """
    )
    pytester.makeini("[pytest]\n")
    monkeypatch.delenv("UOW_TEST_DATABASE_URL", raising=False)
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not list(pytester.path.rglob("*.db"))  # no database made
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", "--fixtures")
    result.stdout.fnmatch_lines(["*uow_db*", "*uow_adb*", "*uow_assert_num_statements*"])
