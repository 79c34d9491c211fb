"""DatabaseSettings: read from `DATABASE_*` variables, validated, turned into a working Database."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import QueuePool

from tests.integration.helpers import checkout_check
from tests.models import AppUnitOfWork, Base, User
from tests.server_log import sqlite_statements
from uow import Database, UowError
from uow.settings import DEFAULT_DATABASE_URL, DatabaseSettings, SettingsError

DEFAULTS: dict[str, Any] = {
    "url": "sqlite:///app.db",
    "echo": False,
    "pool_size": None,
    "max_overflow": None,
    "pool_timeout": None,
    "pool_recycle": None,
    "pool_pre_ping": None,
    "expire_on_commit": False,
    "sqlite_transaction_mode": "IMMEDIATE",
    "lazy_begin": True,
    "replica_urls": (),
    "replica_lag_window": 2.0,
    "transaction_pooling": False,
}

# Bad URLs that carry a password. Each is checked to be rejected by make_url itself.
URL_WITH_BAD_SCHEME = "postgresql:/user:s3cret@db.example.com/app"  # one slash
URL_WITHOUT_HOST = "postgresql://user:s3cret/app"  # "@host" forgotten: the password is the port


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `DATABASE_*` variable of the real environment (any case) reaches a test."""
    for name in list(os.environ):
        if name.upper().startswith("DATABASE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'settings.db'}"


@pytest.fixture
def database_from_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> Iterator[Database]:
    """`create_database()` of settings whose URL comes from DATABASE_URL; tables created."""
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    with created(DatabaseSettings()) as db:
        yield db


@contextmanager
def created(settings: DatabaseSettings) -> Iterator[Database]:
    """`settings.create_database()` with the test tables; disposed at exit."""
    db = settings.create_database()
    db.create_all(Base.metadata)
    try:
        yield db
    finally:
        db.s.remove()
        db.dispose()


def settings_error(**env: str) -> SettingsError:
    """The SettingsError that `DatabaseSettings()` raises with these variables set."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(SettingsError) as caught:
            DatabaseSettings()
    return caught.value


# -- reading the environment -------------------------------------------------------------------


def test_with_no_variables_the_url_is_the_sqlite_file_app_db() -> None:
    settings = DatabaseSettings()
    assert DEFAULT_DATABASE_URL == "sqlite:///app.db"
    assert settings.model_dump() == DEFAULTS


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("url", "postgresql+psycopg://app@db.example.com/app", None),
        ("echo", "true", True),
        ("pool_size", "7", 7),
        ("max_overflow", "0", 0),
        ("pool_timeout", "2.5", 2.5),
        ("pool_recycle", "-1", -1),
        ("pool_pre_ping", "false", False),
        ("expire_on_commit", "1", True),
        ("sqlite_transaction_mode", "EXCLUSIVE", "EXCLUSIVE"),
        ("lazy_begin", "false", False),
        ("replica_urls", "sqlite:///r.db", ("sqlite:///r.db",)),
        ("replica_lag_window", "0.5", 0.5),
    ],
)
def test_each_field_is_read_from_its_database_variable_and_nothing_else_changes(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str, expected: object
) -> None:
    monkeypatch.setenv(f"DATABASE_{field.upper()}", value)
    expected = value if expected is None else expected
    assert DatabaseSettings().model_dump() == {**DEFAULTS, field: expected}


def test_the_environment_is_read_when_settings_are_created_not_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")
    first = DatabaseSettings()
    monkeypatch.setenv("DATABASE_POOL_SIZE", "9")
    assert (first.pool_size, DatabaseSettings().pool_size) == (3, 9)


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("DATABASE_ECHO", "true")
    settings = DatabaseSettings(url="sqlite:///from-kwargs.db", pool_size=11)
    assert (settings.url, settings.pool_size) == ("sqlite:///from-kwargs.db", 11)
    assert settings.echo is True  # not given as a keyword: still from the environment


# -- engine and session options ----------------------------------------------------------------


def test_engine_options_hold_only_echo_when_no_pool_option_is_set() -> None:
    assert DatabaseSettings().engine_options() == {"echo": False}


def test_engine_options_hold_echo_and_the_pool_options_that_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_ECHO", "yes")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "4")
    monkeypatch.setenv("DATABASE_POOL_PRE_PING", "off")  # set to False: still an option
    assert DatabaseSettings().engine_options() == {
        "echo": True,
        "pool_size": 4,
        "pool_pre_ping": False,
    }
    every = DatabaseSettings(max_overflow=2, pool_timeout=1.5, pool_recycle=600)
    assert every.engine_options() == {
        "echo": True,
        "pool_size": 4,
        "max_overflow": 2,
        "pool_timeout": 1.5,
        "pool_recycle": 600,
        "pool_pre_ping": False,
    }


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("0", False)])
def test_session_options_carry_expire_on_commit(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    assert DatabaseSettings().session_options() == {"expire_on_commit": False}
    monkeypatch.setenv("DATABASE_EXPIRE_ON_COMMIT", value)
    assert DatabaseSettings().session_options() == {"expire_on_commit": expected}


# -- create_database ---------------------------------------------------------------------------


def test_create_database_builds_a_working_database_on_the_url_from_the_environment(
    database_from_env: Database, sqlite_url: str
) -> None:
    assert database_from_env.url == make_url(sqlite_url)
    uow = AppUnitOfWork(database_from_env)
    with uow:
        uow.users.create(email="ada@example.com", name="Ada")
    with database_from_env.Session() as session:
        assert list(session.scalars(select(User.email))) == ["ada@example.com"]


@pytest.mark.parametrize(("value", "expires"), [("true", True), ("false", False)])
def test_expire_on_commit_from_the_environment_decides_whether_objects_expire(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str, value: str, expires: bool
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("DATABASE_EXPIRE_ON_COMMIT", value)
    with created(DatabaseSettings()) as db:
        with db.Session() as session:
            user = User(email="ada@example.com", name="Ada")
            session.add(user)
            session.commit()
            assert ("name" in inspect(user).expired_attributes) is expires


def test_pool_options_from_the_environment_reach_the_engines_pool(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "4.5")
    with created(DatabaseSettings()) as db:
        pool = db.engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.size(), pool.timeout()) == (3, 4.5)


def test_echo_and_the_sqlite_transaction_mode_from_the_environment_reach_the_engine(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("DATABASE_ECHO", "true")
    monkeypatch.setenv("DATABASE_SQLITE_TRANSACTION_MODE", "EXCLUSIVE")
    with created(DatabaseSettings()) as db:
        assert db.engine.echo is True
        db.dispose()  # a new connection, which sqlite_statements traces
        with sqlite_statements(db) as sent, db.Session() as session, session.begin():
            session.add(User(email="ada@example.com", name="Ada"))
        assert sent[0] == "BEGIN EXCLUSIVE"


# -- errors ------------------------------------------------------------------------------------


def test_settings_error_is_a_value_error_and_a_uow_error() -> None:
    error = settings_error(DATABASE_POOL_SIZE="many")
    assert isinstance(error, ValueError)
    assert isinstance(error, UowError)


@pytest.mark.parametrize("value", ["many", "0", "-3", "2.5"])
def test_bad_pool_size_names_the_variable(value: str) -> None:
    message = str(settings_error(DATABASE_POOL_SIZE=value))
    assert "DATABASE_POOL_SIZE" in message
    assert "DATABASE_URL" not in message


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_POOL_SIZE", "")
    monkeypatch.setenv("DATABASE_ECHO", "")
    settings = DatabaseSettings()
    assert settings.pool_size is None
    assert settings.echo is False


def test_a_misspelt_keyword_is_an_error_listing_the_valid_settings_without_its_value() -> None:
    with pytest.raises(SettingsError, match="uri") as caught:
        DatabaseSettings(uri="postgresql://app:s3cret@db.example.com/app")
    message = str(caught.value)
    assert "pool_size" in message
    assert "s3cret" not in message


def test_unrelated_database_variables_are_not_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD", "s3cret")  # another tool's variable
    assert DatabaseSettings().url == "sqlite:///app.db"


def test_repr_and_str_mask_the_password_in_the_url() -> None:
    settings = DatabaseSettings(url="postgresql+psycopg://app:s3cret@db.example.com/app")
    for text in (repr(settings), str(settings)):
        assert "s3cret" not in text
        assert "app:***@db.example.com" in text
    assert settings.url.endswith("app:s3cret@db.example.com/app")  # the value itself is intact


def test_the_transaction_mode_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_SQLITE_TRANSACTION_MODE", "deferred")
    assert DatabaseSettings().sqlite_transaction_mode == "DEFERRED"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_MAX_OVERFLOW", "-1"),
        ("DATABASE_POOL_TIMEOUT", "0"),
        ("DATABASE_POOL_TIMEOUT", "soon"),
        ("DATABASE_POOL_RECYCLE", "-2"),
    ],
)
def test_bad_pool_option_names_its_variable(variable: str, value: str) -> None:
    assert variable in str(settings_error(**{variable: value}))


@pytest.mark.parametrize(
    "variable", ["DATABASE_ECHO", "DATABASE_POOL_PRE_PING", "DATABASE_EXPIRE_ON_COMMIT"]
)
def test_bad_boolean_names_the_variable(variable: str) -> None:
    message = str(settings_error(**{variable: "maybe"}))
    assert variable in message
    assert "maybe" in message  # not secret: the value is shown to help


def test_bad_transaction_mode_names_the_variable() -> None:
    message = str(settings_error(DATABASE_SQLITE_TRANSACTION_MODE="LAZY"))
    assert "DATABASE_SQLITE_TRANSACTION_MODE" in message
    assert "IMMEDIATE" in message  # the allowed values are listed


def test_a_bad_keyword_argument_is_reported_under_its_variable() -> None:
    with pytest.raises(SettingsError, match="DATABASE_POOL_SIZE"):
        DatabaseSettings(pool_size=0)


@pytest.mark.parametrize("url", [URL_WITH_BAD_SCHEME, URL_WITHOUT_HOST])
def test_bad_url_names_the_variable_and_never_shows_the_url(url: str) -> None:
    with pytest.raises((ArgumentError, ValueError)):
        make_url(url)  # really a URL SQLAlchemy rejects
    message = str(settings_error(DATABASE_URL=url))
    assert "DATABASE_URL" in message
    assert url not in message
    assert "s3cret" not in message
    assert "example.com" not in message


def test_a_bad_url_is_not_revealed_by_the_printed_traceback() -> None:
    error = settings_error(DATABASE_URL=URL_WITH_BAD_SCHEME)
    printed = "".join(traceback.format_exception(error))
    assert "DATABASE_URL" in printed
    assert "s3cret" not in printed


def test_several_bad_variables_are_all_reported_at_once() -> None:
    message = str(
        settings_error(
            DATABASE_URL=URL_WITH_BAD_SCHEME,
            DATABASE_POOL_SIZE="0",
            DATABASE_ECHO="maybe",
            DATABASE_SQLITE_TRANSACTION_MODE="LAZY",
        )
    )
    for variable in [
        "DATABASE_URL",
        "DATABASE_POOL_SIZE",
        "DATABASE_ECHO",
        "DATABASE_SQLITE_TRANSACTION_MODE",
    ]:
        assert variable in message
    assert "DATABASE_MAX_OVERFLOW" not in message


def test_the_settings_object_is_frozen() -> None:
    settings = DatabaseSettings(pool_size=2)
    with pytest.raises(ValidationError, match="frozen"):
        settings.pool_size = 5
    assert settings.pool_size == 2


# -- issue 9, item 10: the URL as hosting providers hand it out ---------------------------------

PROVIDER_URL = "postgresql+psycopg://app:s3cret@db.example.com:5432/app?sslmode=require"


def block_modules(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make `import name` fail for each name, as on a machine where it is not installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_database_url_is_an_error_naming_the_variable(value: str) -> None:
    message = str(settings_error(DATABASE_URL=value))
    assert "DATABASE_URL" in message
    assert "empty" in message


def test_an_empty_database_url_in_an_env_file_is_an_error_too(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DATABASE_URL=\nDATABASE_POOL_SIZE=\n")
    with pytest.raises(SettingsError, match="DATABASE_URL") as caught:
        DatabaseSettings(_env_file=env_file)
    assert "DATABASE_POOL_SIZE" not in str(caught.value)  # other empty variables stay unset


def test_an_empty_url_keyword_is_an_error_too() -> None:
    with pytest.raises(SettingsError, match=r"DATABASE_URL: .*empty"):
        DatabaseSettings(url="")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_url_without_a_driver_gets_the_installed_postgresql_driver(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    rest = "://app:s3cret@db.example.com:5432/app?sslmode=require"
    monkeypatch.setenv("DATABASE_URL", scheme + rest)
    settings = DatabaseSettings()
    assert settings.url == PROVIDER_URL  # the rest of the URL is kept as it was written
    db = settings.create_database()  # opens no connection
    assert db.url.drivername == "postgresql+psycopg"
    assert db.url.password == "s3cret"
    db.dispose()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg2"])
def test_a_postgresql_url_with_no_driver_installed_names_what_to_install_not_the_password(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    block_modules(monkeypatch, "psycopg", "psycopg2", "pg8000")
    url = f"{scheme}://app:s3cret@db.example.com/app"
    message = str(settings_error(DATABASE_URL=url))
    assert "DATABASE_URL" in message
    assert "pip install" in message
    if scheme == "postgresql+psycopg2":
        assert "psycopg2" in message  # the driver the URL asked for
    else:
        assert 'pip install "uow-repositories[postgres]"' in message
    assert "s3cret" not in message


def test_an_unknown_database_in_the_url_names_the_variable_not_the_password() -> None:
    message = str(settings_error(DATABASE_URL="nosuchdb://app:s3cret@db.example.com/app"))
    assert "DATABASE_URL" in message
    assert "nosuchdb" in message
    assert "s3cret" not in message


def test_the_url_shows_its_password_masked_and_still_compares_equal_to_its_text() -> None:
    settings = DatabaseSettings(url=PROVIDER_URL)
    masked = "postgresql+psycopg://app:***@db.example.com:5432/app?sslmode=require"
    url = settings.url
    assert (str(url), f"{url}", repr(url)) == (masked, masked, repr(masked))
    assert f"{url:>90}" == f"{masked:>90}"
    for text in (str(settings), repr(settings), str(settings.model_dump())):
        assert "s3cret" not in text
    assert "app:***@db.example.com" in settings.model_dump_json()  # as pydantic's SecretStr
    assert DatabaseSettings(**settings.model_dump()).url == PROVIDER_URL  # a dict keeps it
    assert url == PROVIDER_URL
    assert url.render_as_string(hide_password=False) == PROVIDER_URL
    assert make_url(url).password == "s3cret"
    assert Database(url).url.password == "s3cret"


@pytest.mark.parametrize(
    ("value", "url", "expected"),
    [
        (None, "postgresql+psycopg://app@db.example.com/app", "socket"),
        (None, "sqlite:///app.db", "nothing"),
        ("false", "postgresql+psycopg://app@db.example.com/app", "nothing"),
        ("true", "postgresql+psycopg://app@db.example.com/app", "ping"),
        ("true", "sqlite:///app.db", "ping"),
    ],
)
def test_server_databases_check_connections_at_checkout_unless_the_variable_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, value: str | None, url: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    if value is not None:
        monkeypatch.setenv("DATABASE_POOL_PRE_PING", value)
    db = DatabaseSettings().create_database()  # opens no connection
    assert checkout_check(db) == expected
    db.dispose()
