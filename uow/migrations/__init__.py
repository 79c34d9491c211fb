"""Schema migrations with Alembic underneath, and no `alembic.ini` to write.

[`Migrations`][uow.migrations.Migrations] keeps a migrations directory for one database and
one `MetaData`: `init()` writes it, `revision()` autogenerates a revision from the models,
`upgrade()` and `downgrade()` apply them, `current()` and `history()` say where the database
and the directory stand. `python -m uow.migrations` is the same as a command line, reading
`DATABASE_URL` (and the other `DATABASE_*` settings) as
[`DatabaseSettings`][uow.settings.DatabaseSettings] does.

Alembic's configuration is built in code: the script location is the directory, SQLite's batch
mode is on (`render_as_batch=True`, so that altering a column works there), and the `env.py`
that `init()` writes takes the database and the metadata from the `Migrations` object that runs
it. Run by Alembic's own command line instead, it reads them from the environment as
`python -m uow.migrations` does (`DATABASE_URL`, `UOW_MIGRATIONS_METADATA`).

An [`AsyncDatabase`][uow.AsyncDatabase] may be given too: each operation opens a connection of
its own from the database's URL (no pool), in an event loop of its own, and runs Alembic on it
through `run_sync`. The methods are plain functions either way; from async code, call them in
a thread (`await asyncio.to_thread(migrations.upgrade)`).

Needs the `migrations` extra: `pip install "uow-repositories[migrations]"`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import MetaData
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from uow.async_database import AsyncDatabase
from uow.database import Database
from uow.errors import UowError
from uow.settings import DatabaseSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

try:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import Script, ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError
except ImportError as err:
    raise ImportError(
        f"uow.migrations needs {err.name or 'alembic'!r}, which is not installed: "
        f'pip install "uow-repositories[migrations]"',
        name=err.name,
    ) from err

__all__ = [
    "DIRECTORY_VARIABLE",
    "METADATA_VARIABLE",
    "MigrationError",
    "Migrations",
    "Revision",
    "from_environment",
    "load_metadata",
    "run_environment",
]

METADATA_VARIABLE = "UOW_MIGRATIONS_METADATA"
"""The environment variable naming the metadata, as `package.module:attribute`."""

DIRECTORY_VARIABLE = "UOW_MIGRATIONS_DIRECTORY"
"""The environment variable naming the migrations directory (default `migrations`)."""

# The key of Alembic's `Config.attributes` under which env.py finds the Migrations running it.
_ATTRIBUTE = "uow.migrations"

_T = TypeVar("_T")

_ENV_PY = '''\
"""Alembic's environment for these migrations, written by `uow.migrations`.

`Migrations(...).upgrade()` and `python -m uow.migrations upgrade` run it with their database
and metadata. Keyword arguments given to `run_environment` reach Alembic's `context.configure`
(`compare_server_default=True`, `include_object=...`).
"""

from uow.migrations import run_environment

run_environment()
'''

_SCRIPT_MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    """Upgrade schema."""
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    """Downgrade schema."""
    ${downgrades if downgrades else "pass"}
'''

_README = """\
Migrations of this project's database, kept by `uow.migrations` (Alembic underneath).

    python -m uow.migrations revision -m "add the users table"
    python -m uow.migrations upgrade
"""


class MigrationError(UowError, RuntimeError):
    """A migration command could not run: no migrations directory yet, an unknown revision,
    a database that is not up to date for autogenerate, metadata that cannot be found...
    The message says which, and names the directory or the setting involved."""


@dataclass(frozen=True)
class Revision:
    """One revision of the migrations directory.

    Attributes:
        id: the revision id (`"1975ea83b712"`), what `upgrade()` and `downgrade()` take.
        down_revisions: the ids of the revisions it follows: none for the first revision, two
            or more for a merge.
        message: the message it was created with.
        path: its file in the `versions` directory.
    """

    id: str
    down_revisions: tuple[str, ...]
    message: str
    path: Path


class Migrations:
    """The migrations of one database, kept in one directory, with Alembic underneath.

    Args:
        database: the [`Database`][uow.Database] or [`AsyncDatabase`][uow.AsyncDatabase] to
            migrate. A `Database`'s engine runs the migrations; an `AsyncDatabase`'s URL opens
            a connection of its own for each operation, in an event loop of its own.
        metadata: the models' `MetaData` (`Base.metadata`), which `revision()` compares the
            database with. `None` is allowed for everything but autogenerate.
        directory: the migrations directory (a relative path is taken from the working
            directory at creation): `env.py`, `script.py.mako` and `versions/`.

    Raises:
        TypeError: `database` or `metadata` is of the wrong type (before any SQL).

    Examples:
        ```python
        from sqlalchemy import String
        from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

        from uow import Database
        from uow.migrations import Migrations


        class Base(DeclarativeBase):
            pass


        class Author(Base):
            __tablename__ = "authors"
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str] = mapped_column(String(100))


        migrations = Migrations(Database("sqlite:///library.db"), Base.metadata)
        migrations.init()
        first = migrations.revision("create the authors table")
        migrations.upgrade()
        assert migrations.current() == (first.id,)
        ```
    """

    def __init__(
        self,
        database: Database | AsyncDatabase,
        metadata: MetaData | None,
        directory: str | os.PathLike[str] = "migrations",
    ) -> None:
        if not isinstance(database, Database | AsyncDatabase):
            raise TypeError(
                f"Migrations needs a Database or an AsyncDatabase, got {type(database).__name__}"
            )
        if metadata is not None and not isinstance(metadata, MetaData):
            raise TypeError(
                f"Migrations needs a MetaData (such as Base.metadata) or None, got "
                f"{type(metadata).__name__}"
            )
        self.database = database
        self.metadata = metadata
        self.directory = Path(directory).absolute()

    def __repr__(self) -> str:
        return f"Migrations({self.database!r}, directory={str(self.directory)!r})"

    # -- the commands ----------------------------------------------------------------------

    def init(self) -> None:
        """Write the migrations directory: `env.py`, `script.py.mako`, an empty `versions/`.

        Raises:
            MigrationError: the directory exists and is not empty.
        """
        if self.directory.exists() and any(self.directory.iterdir()):
            raise MigrationError(
                f"cannot init migrations in {self.directory}: the directory exists and is not empty"
            )
        (self.directory / "versions").mkdir(parents=True, exist_ok=True)
        (self.directory / "env.py").write_text(_ENV_PY)
        (self.directory / "script.py.mako").write_text(_SCRIPT_MAKO)
        (self.directory / "README").write_text(_README)

    def revision(self, message: str, autogenerate: bool = True) -> Revision:
        """Create a revision; with `autogenerate`, its operations are the differences between
        the database (which must be up to date) and the metadata.

        A revision with nothing to do is created all the same (its functions just `pass`), as
        Alembic does; read it and delete it if you did not want it.

        Raises:
            MigrationError: no migrations directory, the database is not at the head revision
                (upgrade first), or `autogenerate` without metadata.
        """
        if not isinstance(message, str):
            raise TypeError(f"the message must be a str, got {type(message).__name__}")
        if autogenerate and self.metadata is None:
            raise MigrationError(
                "autogenerate compares the database with the models' metadata, and these "
                "Migrations have none: pass Base.metadata (from the command line: --metadata "
                f"package.module:Base.metadata, or {METADATA_VARIABLE})"
            )
        config = self._config()
        with self._alembic_errors():
            created = command.revision(config, message=message, autogenerate=autogenerate)
        scripts = created if isinstance(created, list) else [created]
        script = scripts[0]
        if script is None:  # pragma: no cover - only with a process_revision_directives hook
            raise MigrationError(f"no revision was written in {self.directory}")
        return _revision(script)

    def upgrade(self, target: str = "head") -> None:
        """Apply the revisions up to `target` (`"head"`, a revision id, `"+1"`).

        Raises:
            MigrationError: no migrations directory, or an unknown target.
        """
        config = self._config(target)
        with self._alembic_errors():
            command.upgrade(config, target)

    def downgrade(self, target: str) -> None:
        """Revert the revisions down to `target` (a revision id, `"-1"`, or `"base"`, which
        reverts them all).

        Raises:
            MigrationError: no migrations directory, or an unknown target.
        """
        config = self._config(target)
        with self._alembic_errors():
            command.downgrade(config, target)

    def current(self) -> tuple[str, ...]:
        """The ids of the revisions the database is at: none before the first upgrade (and
        after a downgrade to base), one on a single branch."""
        return self._run(
            lambda connection: MigrationContext.configure(connection).get_current_heads()
        )

    def history(self) -> list[Revision]:
        """The directory's revisions, in the order they apply: the first revision first.

        Raises:
            MigrationError: no migrations directory.
        """
        script = ScriptDirectory.from_config(self._config())
        with self._alembic_errors():
            scripts = list(script.walk_revisions())
        return [_revision(each) for each in reversed(scripts)]

    # -- Alembic's side --------------------------------------------------------------------

    def _config(self, target: str | None = None) -> Config:
        """Alembic's configuration, in code; checks the directory (and `target`) first."""
        if not (self.directory / "env.py").is_file():
            raise MigrationError(
                f"no migrations in {self.directory}: run init() first "
                f"(python -m uow.migrations init)"
            )
        config = Config(cmd_opts=argparse.Namespace(quiet=True))
        config.set_main_option("script_location", str(self.directory))
        config.attributes[_ATTRIBUTE] = self
        if target is not None:
            self._check_target(config, target)
        return config

    def _check_target(self, config: Config, target: str) -> None:
        """An unknown revision is a MigrationError before any connection."""
        if not isinstance(target, str):
            raise TypeError(f"the target must be a str, got {type(target).__name__}")
        # Relative targets (`+1`, `-1`, `head-1`) depend on the database's state.
        if re.search(r"[+-]\d+$", target):
            return
        script = ScriptDirectory.from_config(config)
        with self._alembic_errors():
            script.revision_map.get_revisions(target)

    @contextmanager
    def _alembic_errors(self) -> Iterator[None]:
        try:
            yield
        except (CommandError, RevisionError) as err:
            raise MigrationError(f"{err} (migrations in {self.directory})") from err

    def _run(self, function: Callable[[Connection], _T]) -> _T:
        """Call `function` with a connection to the database (an AsyncDatabase's: through
        `run_sync`, in an event loop of its own)."""
        if isinstance(self.database, Database):
            with self.database.engine.connect() as connection:
                return function(connection)
        return _run_coroutine(_run_async(self.database, function))


# The options of a pool that NullPool does not take (`pool`: a pool of the database's own).
_POOL_OPTIONS = frozenset({"pool", "pool_size", "max_overflow", "pool_timeout", "pool_use_lifo"})


async def _run_async(database: AsyncDatabase, function: Callable[[Connection], _T]) -> _T:
    # The database's own pool may hold connections of another event loop: a pool-less
    # AsyncDatabase of the same URL, options and set-up serves this loop (without the
    # options of a pool, which a pool-less engine refuses).
    options = {
        name: value for name, value in database._engine_options.items() if name not in _POOL_OPTIONS
    }
    own = AsyncDatabase(
        database.url,
        engine_options={**options, "poolclass": NullPool},
        sqlite_transaction_mode=database._sqlite_transaction_mode,
        lazy_begin=database.lazy_begin,
        transaction_pooling=database.transaction_pooling,
    )
    try:
        async with own.engine.connect() as connection:
            return await connection.run_sync(function)
    finally:
        await own.dispose()


def _run_coroutine(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run(coroutine)`, in a thread of its own if this one runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _revision(script: Script) -> Revision:
    down = script.down_revision
    downs = () if down is None else (down,) if isinstance(down, str) else tuple(down)
    return Revision(
        id=script.revision,
        down_revisions=downs,
        message=script.doc or "",
        path=Path(script.path),
    )


def run_environment(**options: Any) -> None:
    """Run the migrations: what the `env.py` written by `Migrations.init()` calls.

    Run by a [`Migrations`][uow.migrations.Migrations] (or `python -m uow.migrations`), it
    uses its database and metadata; run by Alembic's own command line, it reads them from the
    environment (`DATABASE_URL` and the other `DATABASE_*` settings, `UOW_MIGRATIONS_METADATA`).

    Args:
        **options: keyword arguments for Alembic's `context.configure`
            (`compare_server_default=True`, `include_object=...`); `render_as_batch` is on
            unless given.
    """
    from alembic import context

    migrations = context.config.attributes.get(_ATTRIBUTE)
    if not isinstance(migrations, Migrations):
        script_location = context.config.get_main_option("script_location") or "migrations"
        migrations = from_environment(directory=script_location)
    if context.is_offline_mode():
        raise MigrationError(
            "uow.migrations runs migrations on the database: offline (--sql) mode is not supported"
        )
    options = {"render_as_batch": True, **options}
    metadata = migrations.metadata

    def run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=metadata, **options)
        with context.begin_transaction():
            context.run_migrations()

    migrations._run(run)


def load_metadata(reference: str) -> MetaData:
    """The `MetaData` that `reference` (`"package.module:Base.metadata"`) names.

    The part after the colon is a dotted attribute path; naming a declarative base
    (`"package.module:Base"`) is enough, its `metadata` is taken.

    Raises:
        MigrationError: the reference is malformed, its module cannot be imported, or it
            names something else than a MetaData.
    """
    module_name, colon, attributes = reference.partition(":")
    if not colon or not module_name or not attributes:
        raise MigrationError(
            f"the metadata reference {reference!r} is not of the form "
            f"'package.module:Base.metadata'"
        )
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as err:
        raise MigrationError(
            f"cannot import {module_name!r}, named by the metadata reference {reference!r}: {err}"
        ) from err
    for attribute in attributes.split("."):
        try:
            found = getattr(found, attribute)
        except AttributeError:
            raise MigrationError(
                f"the metadata reference {reference!r}: {attribute!r} not found"
            ) from None
    if not isinstance(found, MetaData):
        found = getattr(found, "metadata", found)
    if not isinstance(found, MetaData):
        raise MigrationError(
            f"the metadata reference {reference!r} names a {type(found).__name__}, not a MetaData"
        )
    return found


def from_environment(
    metadata: str | None = None, directory: str | os.PathLike[str] | None = None
) -> Migrations:
    """A `Migrations` configured as `python -m uow.migrations` is.

    The database comes from [`DatabaseSettings`][uow.settings.DatabaseSettings]
    (`DATABASE_URL`, ...): an [`AsyncDatabase`][uow.AsyncDatabase] for an async driver's URL,
    a [`Database`][uow.Database] otherwise. The metadata is the reference `metadata`, else
    that of `UOW_MIGRATIONS_METADATA`, else none (enough for everything but autogenerate).
    The directory is `directory`, else `UOW_MIGRATIONS_DIRECTORY`, else `migrations`.

    Raises:
        SettingsError: a `DATABASE_*` setting is invalid.
        MigrationError: the metadata reference is.
    """
    settings = DatabaseSettings()
    url = make_url(settings.url.render_as_string(hide_password=False))
    database: Database | AsyncDatabase
    if url.get_dialect().is_async:
        database = settings.create_async_database()
    else:
        database = settings.create_database()
    reference = metadata or os.environ.get(METADATA_VARIABLE) or None
    return Migrations(
        database,
        load_metadata(reference) if reference else None,
        directory or os.environ.get(DIRECTORY_VARIABLE) or "migrations",
    )
