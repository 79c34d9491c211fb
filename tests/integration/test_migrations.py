"""uow.migrations: autogenerate, upgrade, change the models, autogenerate again, downgrade to base,
on SQLite and PostgreSQL, sync and async URLs, through the API and `python -m uow.migrations`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    MetaData,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import Pool
from sqlalchemy.util import await_

from tests.conftest import postgres_url
from uow import AsyncDatabase, Database
from uow.migrations import MigrationError, Migrations, Revision, load_metadata

ROOT = Path(__file__).resolve().parents[2]

# The drivers of each backend: the sync one, then the async one.
DRIVERS = {
    "sqlite": ("sqlite", "sqlite+aiosqlite"),
    "postgresql": ("postgresql+psycopg", "postgresql+asyncpg"),
}


MODELS_SOURCE = """\
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table

metadata = MetaData()
Table(
    "authors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable={nullable}),
    {email}
)
Table(
    "books",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("title", String(200), nullable=False),
    Column("author_id", ForeignKey("authors.id"), nullable=False),
)
"""


def models_source(version: int) -> str:
    """The models' module: version 2 adds `authors.email` and makes `authors.name` nullable, an
    ALTER COLUMN, which SQLite only does in batch mode (a copy of the table)."""
    email = 'Column("email", String(200), nullable=True),' if version == 2 else ""
    return MODELS_SOURCE.format(nullable=version == 2, email=email)


def models(version: int) -> MetaData:
    namespace: dict[str, object] = {}
    exec(models_source(version), namespace)
    metadata = namespace["metadata"]
    assert isinstance(metadata, MetaData)
    return metadata


def write_models(directory: Path, version: int) -> None:
    (directory / "app_models.py").write_text(models_source(version))


@pytest.fixture(params=["sqlite", "postgresql"])
def sync_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of its own: a SQLite file, or a PostgreSQL database created
    for the test (the server is shared with other tests) and dropped after it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    server = make_url(postgres_url())
    name = f"uow_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def async_url_of(url: str) -> str:
    parsed = make_url(url)
    _, asynchronous = DRIVERS[parsed.get_backend_name()]
    return parsed.set(drivername=asynchronous).render_as_string(hide_password=False)


@pytest.fixture(params=["sync", "async"])
def url(request: pytest.FixtureRequest, sync_url: str) -> str:
    """The database's URL with its sync driver, or its async one (aiosqlite, asyncpg)."""
    return sync_url if request.param == "sync" else async_url_of(sync_url)


@contextmanager
def database_of(url: str) -> Iterator[Database | AsyncDatabase]:
    """A Database, or an AsyncDatabase for an async driver's URL; disposed at the end (before
    the test's PostgreSQL database is dropped)."""
    if make_url(url).get_dialect().is_async:
        adb = AsyncDatabase(url)
        try:
            yield adb
        finally:
            asyncio.run(adb.dispose())
    else:
        database = Database(url)
        try:
            yield database
        finally:
            database.dispose()


def tables(sync_url: str) -> dict[str, dict[str, bool]]:
    """Each table of the database: its columns and whether each is nullable."""
    engine = create_engine(sync_url)
    try:
        inspector = inspect(engine)
        return {
            table: {column["name"]: column["nullable"] for column in inspector.get_columns(table)}
            for table in inspector.get_table_names()
        }
    finally:
        engine.dispose()


def test_a_round_trip_through_the_api(url: str, sync_url: str, tmp_path: Path) -> None:
    with database_of(url) as database:
        round_trip(database, sync_url, tmp_path)


def round_trip(database: Database | AsyncDatabase, sync_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    migrations = Migrations(database, models(1), directory)
    migrations.init()
    assert (directory / "env.py").is_file()
    assert migrations.current() == ()
    assert migrations.history() == []

    first = migrations.revision("create authors and books")
    assert isinstance(first, Revision)
    assert first.down_revisions == ()
    assert first.message == "create authors and books"
    assert first.path.parent == directory / "versions"
    assert "op.create_table('authors'" in first.path.read_text()
    assert "authors" not in tables(sync_url)  # a revision changes no schema

    migrations.upgrade()
    assert migrations.current() == (first.id,)
    assert tables(sync_url) == {
        "alembic_version": {"version_num": False},
        "authors": {"id": False, "name": False},
        "books": {"id": False, "title": False, "author_id": False},
    }

    # The models change: a second MetaData, the same directory.
    changed = Migrations(database, models(2), directory)
    second = changed.revision("authors have an email")
    source = second.path.read_text()
    assert "batch_op.add_column(sa.Column('email'" in source
    assert "batch_op.alter_column('name'" in source
    assert second.down_revisions == (first.id,)
    changed.upgrade()
    assert changed.current() == (second.id,)
    assert tables(sync_url)["authors"] == {"id": False, "name": True, "email": True}

    assert migrations.history() == [first, second]

    migrations.downgrade(first.id)
    assert migrations.current() == (first.id,)
    assert tables(sync_url)["authors"] == {"id": False, "name": False}

    migrations.downgrade("base")
    assert migrations.current() == ()
    assert tables(sync_url) == {"alembic_version": {"version_num": False}}

    migrations.upgrade(second.id)  # by id, and back to the head
    assert migrations.current() == (second.id,)
    migrations.downgrade("-1")
    assert migrations.current() == (first.id,)


def test_an_empty_revision_needs_no_metadata(tmp_path: Path) -> None:
    migrations = Migrations(Database(f"sqlite:///{tmp_path / 'app.db'}"), None, tmp_path / "m")
    migrations.init()
    revision = migrations.revision("by hand", autogenerate=False)
    assert "def upgrade() -> None:" in revision.path.read_text()
    migrations.upgrade()
    assert migrations.current() == (revision.id,)
    with pytest.raises(MigrationError, match="metadata"):
        migrations.revision("from the models")


async def test_the_api_works_from_async_code_too(tmp_path: Path) -> None:
    # Its own event loop cannot run in this one's thread: it runs in a thread of its own.
    database = AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    migrations = Migrations(database, models(1), tmp_path / "migrations")
    migrations.init()
    first = migrations.revision("create authors and books")
    migrations.upgrade()
    assert migrations.current() == (first.id,)
    async with database.engine.connect() as connection:
        rows = await connection.execute(text("SELECT version_num FROM alembic_version"))
        assert rows.scalars().all() == [first.id]
    await database.dispose()


@pytest.mark.parametrize("sync_url", ["postgresql"], indirect=True)
def test_an_async_database_migrates_with_its_engine_options(sync_url: str, tmp_path: Path) -> None:
    # The migrations' own pool-less engine keeps the AsyncDatabase's options: its connections'
    # search_path puts the tables in the `app` schema, not in `public`; the pool's sizing, which
    # a pool-less engine refuses, is left out.
    admin = create_engine(sync_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("CREATE SCHEMA app"))
    finally:
        admin.dispose()
    options = {"connect_args": {"server_settings": {"search_path": "app"}}, "pool_size": 2}
    database = AsyncDatabase(async_url_of(sync_url), engine_options=options)
    try:
        migrations = Migrations(database, models(1), tmp_path / "migrations")
        migrations.init()
        first = migrations.revision("create authors and books")
        migrations.upgrade()
        assert migrations.current() == (first.id,)
    finally:
        asyncio.run(database.dispose())
    engine = create_engine(sync_url)
    try:
        inspector = inspect(engine)
        assert set(inspector.get_table_names(schema="app")) == {
            "alembic_version",
            "authors",
            "books",
        }
        assert inspector.get_table_names(schema="public") == []
    finally:
        engine.dispose()


def test_an_async_database_migrates_in_its_sqlite_transaction_mode(tmp_path: Path) -> None:
    # Every connection the migrations open (on their engine of their own) is traced.
    statements: list[str] = []

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        await_(dbapi_connection.driver_connection.set_trace_callback(statements.append))

    database = AsyncDatabase(
        f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", sqlite_transaction_mode="EXCLUSIVE"
    )
    event.listen(Pool, "connect", on_connect)
    try:
        migrations = Migrations(database, models(1), tmp_path / "migrations")
        migrations.init()
        migrations.revision("create authors and books")
        migrations.upgrade()
    finally:
        event.remove(Pool, "connect", on_connect)
        asyncio.run(database.dispose())
    begins = [statement for statement in statements if statement.startswith("BEGIN")]
    assert begins
    assert set(begins) == {"BEGIN EXCLUSIVE"}


# -- errors -----------------------------------------------------------------------------------


def unreachable() -> Database:
    """A Database no connection can be opened to: what runs before any SQL cannot touch it."""
    return Database("postgresql+psycopg://nobody:secret@127.0.0.1:9/nothing")


@pytest.mark.parametrize("call", ["upgrade", "downgrade", "revision", "history"])
def test_a_command_before_init_names_the_directory(tmp_path: Path, call: str) -> None:
    migrations = Migrations(unreachable(), models(1), tmp_path / "nowhere")
    with pytest.raises(MigrationError, match="nowhere: run init\\(\\) first"):
        if call == "revision":
            migrations.revision("first")
        elif call == "history":
            migrations.history()
        else:
            getattr(migrations, call)("base")


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "notes.txt").write_text("mine")
    migrations = Migrations(unreachable(), None, tmp_path / "migrations")
    with pytest.raises(MigrationError, match="not empty"):
        migrations.init()
    assert sorted(path.name for path in (tmp_path / "migrations").iterdir()) == ["notes.txt"]


def test_an_unknown_target_is_an_error_before_any_connection(tmp_path: Path) -> None:
    migrations = Migrations(unreachable(), None, tmp_path / "migrations")
    migrations.init()
    for call in (migrations.upgrade, migrations.downgrade):
        with pytest.raises(MigrationError, match="'nope'") as caught:
            call("nope")
        assert str(tmp_path / "migrations") in str(caught.value)


def test_autogenerate_on_a_database_behind_the_head_is_refused(tmp_path: Path) -> None:
    migrations = Migrations(Database(f"sqlite:///{tmp_path / 'a.db'}"), models(1), tmp_path)
    migrations.directory = tmp_path / "migrations"
    migrations.init()
    migrations.revision("first")
    with pytest.raises(MigrationError, match="not up to date"):
        migrations.revision("second")


def test_wrong_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="Database or an AsyncDatabase"):
        Migrations("sqlite:///app.db", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="MetaData"):
        Migrations(unreachable(), object())  # type: ignore[arg-type]


def test_load_metadata_takes_a_metadata_or_a_declarative_base() -> None:
    from tests.models import Base

    assert load_metadata("tests.models:Base.metadata") is Base.metadata
    assert load_metadata("tests.models:Base") is Base.metadata
    for reference, message in [
        ("tests.models", "not of the form"),
        ("tests.no_such_module:Base", "cannot import"),
        ("tests.models:Nothing", "'Nothing' not found"),
        ("tests.models:AppUnitOfWork", "not a MetaData"),
    ]:
        with pytest.raises(MigrationError, match=message):
            load_metadata(reference)


# -- the command line -------------------------------------------------------------------------


def cli(cwd: Path, url: str, *arguments: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "DATABASE_URL": url,
        "UOW_MIGRATIONS_METADATA": "app_models:metadata",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "uow.migrations", *arguments],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == expect, done.stderr
    return done


def test_a_round_trip_through_the_command_line(url: str, sync_url: str, tmp_path: Path) -> None:
    write_models(tmp_path, 1)
    cli(tmp_path, url, "init")
    assert (tmp_path / "migrations" / "env.py").is_file()
    created = cli(tmp_path, url, "revision", "-m", "create authors and books")
    assert "Detected added table 'authors'" in created.stderr
    first = created.stdout.split()[1]
    assert f"Running upgrade  -> {first}" in cli(tmp_path, url, "upgrade").stderr
    assert cli(tmp_path, url, "current").stdout.split() == [first]
    assert set(tables(sync_url)) == {"alembic_version", "authors", "books"}

    write_models(tmp_path, 2)
    second = cli(tmp_path, url, "revision", "-m", "authors have an email").stdout.split()[1]
    upgraded = cli(tmp_path, url, "upgrade")
    assert f"Running upgrade {first} -> {second}, authors have an email" in upgraded.stderr
    assert tables(sync_url)["authors"] == {"id": False, "name": True, "email": True}
    assert cli(tmp_path, url, "history").stdout.splitlines() == [
        f"<base> -> {first}, create authors and books",
        f"{first} -> {second}, authors have an email",
    ]

    cli(tmp_path, url, "downgrade", "base")
    assert cli(tmp_path, url, "current").stdout == ""
    assert tables(sync_url) == {"alembic_version": {"version_num": False}}


def test_the_command_line_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    no_models = cli(tmp_path, url, "upgrade", expect=1)
    assert no_models.stderr.startswith("error: cannot import 'app_models'")
    assert "Traceback" not in no_models.stderr

    write_models(tmp_path, 1)
    no_init = cli(tmp_path, url, "upgrade", expect=1)
    assert no_init.stderr == (
        f"error: no migrations in {tmp_path / 'migrations'}: run init() first "
        f"(python -m uow.migrations init)\n"
    )
    cli(tmp_path, url, "--directory", "elsewhere", "init")
    assert (tmp_path / "elsewhere" / "env.py").is_file()
    assert not (tmp_path / "migrations").exists()

    bad_url = cli(tmp_path, "nonsense", "current", expect=1)
    assert "DATABASE_URL" in bad_url.stderr
    assert cli(tmp_path, url, "frobnicate", expect=2).stderr.startswith("usage:")


def test_alembics_own_command_line_runs_the_same_env_py(tmp_path: Path) -> None:
    # Run by Alembic (an alembic.ini of the user's), env.py reads the settings from the
    # environment as `python -m uow.migrations` does.
    url = f"sqlite:///{tmp_path / 'app.db'}"
    write_models(tmp_path, 1)
    cli(tmp_path, url, "init")
    cli(tmp_path, url, "revision", "-m", "first")
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    environ = {
        **os.environ,
        "DATABASE_URL": url,
        "UOW_MIGRATIONS_METADATA": "app_models:metadata",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]),
    }
    alembic = [sys.executable, "-m", "alembic"]
    subprocess.run(
        [*alembic, "upgrade", "head"], cwd=tmp_path, env=environ, check=True, timeout=120
    )
    assert set(tables(url)) == {"alembic_version", "authors", "books"}


def test_a_failing_revision_leaves_the_schema_as_it_was(
    url: str, sync_url: str, tmp_path: Path
) -> None:
    # The revision runs in one transaction (lazy BEGIN sends it before the first DDL): the
    # table it created before failing is rolled back with the version's update.
    with database_of(url) as database:
        migrations = Migrations(database, models(1), tmp_path / "migrations")
        migrations.init()
        first = migrations.revision("create authors and books")
        migrations.upgrade()
        broken = migrations.revision("broken", autogenerate=False)
        source = broken.path.read_text().replace(
            '    """Upgrade schema."""\n    pass',
            '    """Upgrade schema."""\n'
            '    op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))\n'
            '    raise RuntimeError("the revision failed")',
        )
        assert "the revision failed" in source
        broken.path.write_text(source)
        with pytest.raises(RuntimeError, match="the revision failed"):
            migrations.upgrade()
        assert migrations.current() == (first.id,)
        assert "notes" not in tables(sync_url)
