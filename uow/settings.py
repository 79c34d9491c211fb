"""`DatabaseSettings`: a Database's configuration, read from `DATABASE_*` environment variables."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from uow.database import Database
from uow.errors import UowError

__all__ = ["DEFAULT_DATABASE_URL", "DatabaseSettings", "SettingsError"]

ENV_PREFIX = "DATABASE_"

DEFAULT_DATABASE_URL = "sqlite:///app.db"
"""The URL used when `DATABASE_URL` is unset: an embedded SQLite file in the working directory."""

# Settings that become `create_engine` keyword arguments when they are set. Left unset, the
# dialect's own defaults apply (SQLite's in-memory pool takes no pool size, for example).
_POOL_OPTIONS = ("pool_size", "max_overflow", "pool_timeout", "pool_recycle", "pool_pre_ping")


class SettingsError(UowError, ValueError):
    """A setting has a bad value; the message names its environment variable."""


class DatabaseSettings(BaseSettings):
    """How to connect: the URL, logging, the connection pool and the sessions' behaviour.

    Each field is read from the environment variable `DATABASE_<FIELD>` (`DATABASE_URL`,
    `DATABASE_POOL_SIZE`, ...), or from a `.env` file you pass as `_env_file`; keyword arguments
    win over both. Reading happens when you create the settings, never at import. A bad value
    raises [`SettingsError`][uow.settings.SettingsError] naming the variable, so a misconfigured
    application fails at start-up rather than on its first query.

    Attributes:
        url: a SQLAlchemy URL (`DATABASE_URL`); the default is the SQLite file `app.db` in
            the working directory.
        echo: log every SQL statement (`DATABASE_ECHO`).
        pool_size: connections kept open in the pool (`DATABASE_POOL_SIZE`).
        max_overflow: connections allowed beyond `pool_size` (`DATABASE_MAX_OVERFLOW`).
        pool_timeout: seconds to wait for a free connection (`DATABASE_POOL_TIMEOUT`).
        pool_recycle: seconds after which a connection is replaced (`DATABASE_POOL_RECYCLE`).
        pool_pre_ping: test each connection before use (`DATABASE_POOL_PRE_PING`).
        expire_on_commit: expire objects at commit, as SQLAlchemy does by default
            (`DATABASE_EXPIRE_ON_COMMIT`); off by default so objects stay readable after
            `with uow:`.
        sqlite_transaction_mode: how SQLite transactions begin
            (`DATABASE_SQLITE_TRANSACTION_MODE`); see [`Database`][uow.Database].

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
        env_ignore_empty=True,  # `DATABASE_POOL_SIZE=` means "not set", not an error
        # Unrelated DATABASE_* variables and .env lines are not ours to reject; misspelt
        # keyword arguments (and container config keys) are checked in __init__.
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # a URL may carry a password: keep it out of tracebacks
    )

    url: str = DEFAULT_DATABASE_URL
    echo: bool = False
    pool_size: int | None = Field(default=None, ge=1)
    max_overflow: int | None = Field(default=None, ge=0)
    pool_timeout: float | None = Field(default=None, gt=0)
    pool_recycle: int | None = Field(default=None, ge=-1)
    pool_pre_ping: bool | None = None
    expire_on_commit: bool = False
    sqlite_transaction_mode: Literal["IMMEDIATE", "DEFERRED", "EXCLUSIVE"] = "IMMEDIATE"

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(type(self).model_fields))
        if unknown:
            valid = ", ".join(type(self).model_fields)
            raise SettingsError(
                f"unknown database setting(s): {', '.join(unknown)}; valid ones: {valid}"
            )
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise SettingsError(_describe(err)) from err

    def __repr_args__(self) -> Any:
        # A URL may carry a password: repr() and str() show it masked, as SQLAlchemy does.
        for name, value in super().__repr_args__():
            if name == "url" and isinstance(value, str):
                value = make_url(value).render_as_string(hide_password=True)
            yield name, value

    @field_validator("url")
    @classmethod
    def _parse_url(cls, value: str) -> str:
        try:
            make_url(value)
        # make_url raises ValueError too, e.g. int() of a "port" that is really a password.
        except (ArgumentError, ValueError):
            raise ValueError(
                "not a SQLAlchemy URL; expected e.g. 'sqlite:///app.db' or "
                "'postgresql+psycopg://user:password@host/dbname'"
            ) from None  # the driver's message may quote the URL, password included
        return value

    @field_validator("sqlite_transaction_mode", mode="before")
    @classmethod
    def _upper_case_mode(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def engine_options(self) -> dict[str, Any]:
        """Keyword arguments for `sqlalchemy.create_engine`: `echo` and the pool options set."""
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
        """A new [`Database`][uow.Database] built from these settings (opens no connection)."""
        return Database(
            self.url,
            engine_options=self.engine_options(),
            session_options=self.session_options(),
            sqlite_transaction_mode=self.sqlite_transaction_mode,
        )


def _describe(err: ValidationError) -> str:
    lines = []
    for error in err.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        variable = f"{ENV_PREFIX}{field.upper()}"
        # A URL may carry a password: never echo it.
        shown = "input" in error and field != "url"
        given = f" (got {error['input']!r})" if shown else ""
        lines.append(f"{variable}: {error['msg']}{given}")
    return "invalid database settings:\n  " + "\n  ".join(lines)
