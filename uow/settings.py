"""`DatabaseSettings`: a Database's configuration, read from `DATABASE_*` environment variables."""

from __future__ import annotations

import functools
import inspect
import json
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from uow._urls import resolve_url
from uow.async_database import AsyncDatabase
from uow.database import Database
from uow.errors import DriverNotInstalledError, SettingsError

__all__ = ["DEFAULT_DATABASE_URL", "DatabaseSettings", "DatabaseURL", "SettingsError"]

ENV_PREFIX = "DATABASE_"

DEFAULT_DATABASE_URL = "sqlite:///app.db"
"""The URL used when `DATABASE_URL` is unset: an embedded SQLite file in the working directory."""

_EXAMPLE_URL = "postgresql+psycopg://user:password@host/dbname"

# What to write instead, in the messages of a URL whose driver is of the wrong kind.
_ASYNC_DRIVERS = "postgresql+asyncpg://, postgresql+psycopg:// or sqlite+aiosqlite://"
_SYNC_DRIVERS = "postgresql+psycopg://, sqlite:// or another sync driver"

# Settings that become `create_engine` keyword arguments when they are set. Left unset, the
# dialect's own defaults apply (SQLite's in-memory pool takes no pool size, for example).
_POOL_OPTIONS = ("pool_size", "max_overflow", "pool_timeout", "pool_recycle", "pool_pre_ping")


class DatabaseURL(str):
    """A database URL that prints with its password masked, as SQLAlchemy's `URL` does.

    It is the URL's text (a `str`: it compares equal to the text, and `Database` and
    `make_url` take it as it is), but `str()`, `repr()`, f-strings and `print()` show
    `postgresql+psycopg://app:***@db/app`, so logging the settings never logs the password.
    JSON dumps of the settings (`model_dump_json()`) mask it too.

    Examples:
        ```python
        url = DatabaseURL("postgresql+psycopg://app:s3cret@db.example.com/app")
        assert url == "postgresql+psycopg://app:s3cret@db.example.com/app"
        assert str(url) == "postgresql+psycopg://app:***@db.example.com/app"
        assert "s3cret" in url.render_as_string(hide_password=False)
        ```
    """

    __slots__ = ()

    def __new__(cls, text: str) -> DatabaseURL:
        # str(text) would call a DatabaseURL's own __str__, which masks the password.
        return super().__new__(cls, str.__str__(text))

    def render_as_string(self, hide_password: bool = True) -> str:
        """The URL as plain text, the password masked unless `hide_password=False`."""
        text = str.__str__(self)
        if not hide_password:
            return text
        try:
            return make_url(text).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):  # not a URL (never from DatabaseSettings)
            return "<an unparsable database URL>"

    def __str__(self) -> str:
        return self.render_as_string()

    def __repr__(self) -> str:
        return repr(self.render_as_string())

    def __format__(self, format_spec: str) -> str:
        # str.__format__ would format the unmasked text whenever a format spec is given.
        return format(self.render_as_string(), format_spec)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                DatabaseURL.render_as_string, when_used="json"
            ),
        )


class DatabaseSettings(BaseSettings):
    """How to connect: the URL, logging, the connection pool and the sessions' behaviour.

    Each field is read from the environment variable `DATABASE_<FIELD>` (`DATABASE_URL`,
    `DATABASE_POOL_SIZE`, ...), or from a `.env` file you pass as `_env_file`; keyword arguments
    win over both. Reading happens when you create the settings, never at import. A bad value
    raises [`SettingsError`][uow.settings.SettingsError] naming the variable, so a misconfigured
    application fails at start-up rather than on its first query.

    Attributes:
        url: a SQLAlchemy URL (`DATABASE_URL`), a [`DatabaseURL`][uow.settings.DatabaseURL]
            that prints with its password masked. Unset, it is the SQLite file `app.db` in the
            working directory; set but empty, it is an error (an empty value from a deployment
            must not silently mean a local file). A PostgreSQL URL as hosting providers write it
            (`postgres://...`, `postgresql://...`) gets the installed driver, as in
            [`Database`][uow.Database]: `settings.url` is then
            `postgresql+psycopg://...`. A driver that is not installed is an error naming the
            package to install.
        echo: log every SQL statement (`DATABASE_ECHO`).
        pool_size: connections kept open in the pool (`DATABASE_POOL_SIZE`).
        max_overflow: connections allowed beyond `pool_size` (`DATABASE_MAX_OVERFLOW`).
        pool_timeout: seconds to wait for a free connection (`DATABASE_POOL_TIMEOUT`).
        pool_recycle: seconds after which a connection is replaced (`DATABASE_POOL_RECYCLE`).
        pool_pre_ping: ping each connection when it is checked out of the pool
            (`DATABASE_POOL_PRE_PING`). Unset, [`Database`][uow.Database] decides: server
            databases replace a connection their server ended, pinging only when its socket
            shows activity; `false` checks nothing.
        expire_on_commit: expire objects at commit, as SQLAlchemy does by default
            (`DATABASE_EXPIRE_ON_COMMIT`); off by default so objects stay readable after
            `with uow:`.
        sqlite_transaction_mode: how SQLite transactions begin
            (`DATABASE_SQLITE_TRANSACTION_MODE`); see [`Database`][uow.Database].
        lazy_begin: begin each transaction at its first write, not its first statement
            (`DATABASE_LAZY_BEGIN`, on by default); see [`Database`][uow.Database].
        replica_urls: URLs of read replicas (`DATABASE_REPLICA_URLS`: comma-separated, or a
            JSON list), each checked as `url` is and printed with its password masked; empty
            by default. See `replicas` of [`Database`][uow.Database].
        replica_lag_window: seconds a context's read-only blocks stay on the primary after it
            committed a write (`DATABASE_REPLICA_LAG_WINDOW`, 2 by default).
        transaction_pooling: the database is reached through a pooler in transaction
            pooling mode, such as PgBouncer (`DATABASE_TRANSACTION_POOLING`, off by default);
            see `transaction_pooling` of [`Database`][uow.Database].

    Raises:
        SettingsError: a value is invalid; the message names the environment variable.

    Examples:
        ```python
        import os

        os.environ["DATABASE_URL"] = "sqlite:///orders.db"
        os.environ["DATABASE_POOL_SIZE"] = "5"
        settings = DatabaseSettings()
        assert settings.url == "sqlite:///orders.db"
        assert settings.engine_options() == {"echo": False, "pool_size": 5}
        db = settings.create_database()
        ```
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # Empty values reach `_drop_empty_values`, which decides per field: `DATABASE_URL=` is
        # an error, `DATABASE_POOL_SIZE=` means "not set".
        env_ignore_empty=False,
        # Unrelated DATABASE_* variables and .env lines are not ours to reject; misspelt
        # keyword arguments (and container config keys) are checked in __init__.
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # a URL may carry a password: keep it out of tracebacks
    )

    url: DatabaseURL = DatabaseURL(DEFAULT_DATABASE_URL)
    echo: bool = False
    pool_size: int | None = Field(default=None, ge=1)
    max_overflow: int | None = Field(default=None, ge=0)
    pool_timeout: float | None = Field(default=None, gt=0)
    pool_recycle: int | None = Field(default=None, ge=-1)
    pool_pre_ping: bool | None = None
    expire_on_commit: bool = False
    sqlite_transaction_mode: Literal["IMMEDIATE", "DEFERRED", "EXCLUSIVE"] = "IMMEDIATE"
    lazy_begin: bool = True
    replica_urls: Annotated[tuple[DatabaseURL, ...], NoDecode] = ()
    replica_lag_window: float = Field(default=2.0, ge=0)
    transaction_pooling: bool = False

    def __init__(self, **values: Any) -> None:
        known = set(type(self).model_fields) | _source_arguments()
        unknown = sorted(set(values) - known)
        if unknown:
            valid = ", ".join(type(self).model_fields)
            raise SettingsError(
                f"unknown database setting(s): {', '.join(unknown)}; valid ones: {valid}"
            )
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise SettingsError(_describe(err)) from err

    @model_validator(mode="before")
    @classmethod
    def _drop_empty_values(cls, values: Any) -> Any:
        # Deployment tools often write `NAME=` for a variable they have no value for. That
        # means "not set" for every setting but the URL: an empty DATABASE_URL falling back
        # to the local SQLite file would be a silently wrong database in production.
        if not isinstance(values, dict):
            return values
        return {name: value for name, value in values.items() if value != "" or name == "url"}

    @field_validator("url")
    @classmethod
    def _resolve_url(cls, value: str) -> DatabaseURL:
        return _resolved_url(value)

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _split_replica_urls(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text.startswith("["):
            return [part.strip() for part in text.split(",") if part.strip()]
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(
                'not a JSON list of URLs; write url1,url2 or a JSON list ["url1", "url2"]'
            ) from None

    @field_validator("replica_urls")
    @classmethod
    def _resolve_replica_urls(cls, value: tuple[str, ...]) -> tuple[DatabaseURL, ...]:
        return tuple(_resolved_url(url) for url in value)

    @field_validator("transaction_pooling")
    @classmethod
    def _pooling_is_for_postgresql(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("url")  # absent when the URL itself was invalid
        if value and url is not None and make_url(url).get_backend_name() != "postgresql":
            raise ValueError(
                "transaction pooling is for PostgreSQL behind a pooler such as PgBouncer, and "
                f"{ENV_PREFIX}URL is a {make_url(url).get_backend_name()} URL"
            )
        return value

    @field_validator("sqlite_transaction_mode", mode="before")
    @classmethod
    def _upper_case_mode(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments for `sqlalchemy.create_engine`: `echo` and the pool options set.

        An option left unset is left out, and the library's default applies (for
        `pool_pre_ping`: see [`Database`][uow.Database]).
        """
        options: dict[str, Any] = {"echo": self.echo}
        for name in _POOL_OPTIONS:
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        return options

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments for the session factory."""
        return {"expire_on_commit": self.expire_on_commit}

    def create_database(self) -> Database:
        """A new [`Database`][uow.Database] built from these settings (opens no connection).

        Raises:
            SettingsError: the URL names an async driver (`asyncpg`, `aiosqlite`), which a
                `Database` cannot use; the message names `DATABASE_URL` and what to use.
        """
        url = make_url(self.url)
        if url.get_dialect().is_async:
            raise SettingsError(
                _invalid(
                    f"{url.drivername!r} is an async driver, which a Database cannot use: "
                    f"use create_async_database() (or AsyncDatabaseContainer) for an "
                    f"AsyncDatabase, or a URL with a sync driver: {_SYNC_DRIVERS}"
                )
            )
        return Database(self.url, **self._database_options())

    def create_async_database(self) -> AsyncDatabase:
        """A new [`AsyncDatabase`][uow.AsyncDatabase] built from these settings (no connection).

        The same options as [`create_database`][uow.settings.DatabaseSettings.create_database];
        the URL's driver must work with asyncio: `postgresql+asyncpg://`, `postgresql+psycopg://`
        (psycopg 3 serves both) or `sqlite+aiosqlite://`. A SQLite URL that names no driver
        (`sqlite:///app.db`, the default) gets `aiosqlite`. A PostgreSQL URL without a driver
        has the sync driver chosen when the settings were read (psycopg, which serves async
        code too, when installed); name `postgresql+asyncpg://` to use asyncpg.

        Raises:
            SettingsError: the URL names a sync-only driver (`sqlite+pysqlite`, `psycopg2`,
                `pg8000`); the message names `DATABASE_URL` and the async drivers.
            ImportError: the async driver is not installed; the message says what to install.

        Examples:
            ```python
            settings = DatabaseSettings(url="sqlite:///app.db")
            adb = settings.create_async_database()
            assert adb.url.drivername == "sqlite+aiosqlite"
            ```
        """
        return AsyncDatabase(self._async_url(), **self._database_options())

    def _database_options(self) -> dict[str, Any]:
        """The keyword arguments that `Database` and `AsyncDatabase` take after the URL."""
        return {
            "engine_options": self.engine_options(),
            "session_options": self.session_options(),
            "sqlite_transaction_mode": self.sqlite_transaction_mode,
            "lazy_begin": self.lazy_begin,
            "replicas": [url.render_as_string(hide_password=False) for url in self.replica_urls],
            "replica_lag_window": self.replica_lag_window,
            "transaction_pooling": self.transaction_pooling,
        }

    def _async_url(self) -> str:
        """The URL's text, checked to suit an AsyncDatabase."""
        text = self.url.render_as_string(hide_password=False)
        url = make_url(text)
        if url.drivername == "sqlite":  # no driver named: AsyncDatabase gives it aiosqlite
            return text
        if not url.get_dialect(_is_async=True).is_async:
            raise SettingsError(
                _invalid(
                    f"{url.drivername!r} is a sync driver, which an AsyncDatabase cannot use; "
                    f"use an async one: {_ASYNC_DRIVERS}"
                )
            )
        return text


def _resolved_url(value: str) -> DatabaseURL:
    """A URL setting's value, checked, with the installed driver for a URL that names none."""
    if not value.strip():
        raise ValueError(
            f"is set but empty; set it to a URL such as {_EXAMPLE_URL!r}, or unset it "
            f"to use the SQLite file of the default, {DEFAULT_DATABASE_URL!r}"
        )
    # Every message below names the scheme at most: the URL may carry a password, and
    # so may the messages of the errors caught (hence `from None`).
    try:
        resolved = resolve_url(value)
    except DriverNotInstalledError as err:
        raise ValueError(str(err)) from None
    except NoSuchModuleError:
        scheme = value.partition("://")[0]
        raise ValueError(f"SQLAlchemy has no dialect for {scheme!r} URLs") from None
    # make_url raises ValueError too, e.g. int() of a "port" that is really a password.
    except (ArgumentError, ValueError):
        raise ValueError(
            f"not a SQLAlchemy URL; expected e.g. 'sqlite:///app.db' or {_EXAMPLE_URL!r}"
        ) from None
    # Only the scheme changes (`postgres://` -> `postgresql+psycopg://`): the rest stays
    # as written, rather than as SQLAlchemy would render it again.
    scheme, _, rest = value.partition("://")
    if scheme != resolved.drivername:
        value = f"{resolved.drivername}://{rest}"
    return DatabaseURL(value)


@functools.cache
def _source_arguments() -> frozenset[str]:
    """pydantic-settings' own keyword arguments (`_env_file`, ...): not settings, not typos."""
    parameters = inspect.signature(BaseSettings.__init__).parameters
    return frozenset(name for name in parameters if name.startswith("_") and name[1] != "_")


def _invalid(url_problem: str) -> str:
    """The message of a SettingsError about `DATABASE_URL`, worded as a validation error's."""
    return f"invalid database settings:\n  {ENV_PREFIX}URL: {url_problem}"


def _describe(err: ValidationError) -> str:
    lines = []
    for error in err.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        variable = f"{ENV_PREFIX}{field.upper()}"
        # A URL may carry a password: never echo it.
        shown = "input" in error and field != "url" and not field.startswith("replica_urls")
        given = f" (got {error['input']!r})" if shown else ""
        lines.append(f"{variable}: {error['msg']}{given}")
    return "invalid database settings:\n  " + "\n  ".join(lines)
