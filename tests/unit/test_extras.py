"""The extras of setup.cfg bring what the docs tell their users to run."""

from __future__ import annotations

import configparser
import importlib
import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy.exc import InvalidRequestError
from starlette import testclient

from uow import AsyncDatabase, Database
from uow.errors import DriverNotInstalledError

SETUP_CFG = Path(__file__).resolve().parents[2] / "setup.cfg"


def extra(name: str) -> set[str]:
    """The distribution names an extra requires, as setuptools reads them from setup.cfg."""
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    lines = config["options.extras_require"][name].strip().splitlines()
    return {canonicalize_name(Requirement(line).name) for line in lines}


def test_the_fastapi_extra_brings_the_http_client_starlettes_test_client_runs_on() -> None:
    # The module Starlette imported under the name `httpx` (httpx2 since Starlette 1.2).
    client = testclient.httpx.__name__
    distributions = importlib.metadata.packages_distributions()[client]

    assert {canonicalize_name(name) for name in distributions} <= extra("fastapi")


def test_the_test_extra_brings_everything_the_fastapi_extra_does() -> None:
    assert extra("fastapi") <= extra("test")


# -- issue 12: the async drivers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra_name", "module"),
    [("asyncpg", "asyncpg"), ("aiosqlite", "aiosqlite"), ("postgres", "psycopg")],
)
def test_each_driver_extra_brings_the_module_its_urls_import(extra_name: str, module: str) -> None:
    distributions = importlib.metadata.packages_distributions()[module]
    assert {canonicalize_name(name) for name in distributions} & extra(extra_name)


def block_modules(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make `import name` fail for each name, as on a machine where it is not installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(
    ("url", "missing", "install"),
    [
        ("postgresql+asyncpg://app:s3cret@db.example.com/app", "asyncpg", "asyncpg"),
        ("sqlite+aiosqlite:///app.db", "aiosqlite", "aiosqlite"),
        ("sqlite:///app.db", "aiosqlite", "aiosqlite"),  # async code: aiosqlite's URL too
        ("postgresql+psycopg://app:s3cret@db.example.com/app", "psycopg", "postgres"),
    ],
)
def test_an_async_database_without_its_driver_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, url: str, missing: str, install: str
) -> None:
    block_modules(monkeypatch, missing)
    with pytest.raises(ImportError) as caught:
        AsyncDatabase(url)
    assert isinstance(caught.value, DriverNotInstalledError)
    message = str(caught.value)
    assert f'pip install "uow-repositories[{install}]"' in message
    assert "s3cret" not in message


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgresql_url_without_a_driver_gets_an_installed_async_driver(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    url = f"{scheme}://app:s3cret@db.example.com/app"
    assert AsyncDatabase(url).url.drivername == "postgresql+psycopg"  # opens no connection
    block_modules(monkeypatch, "psycopg")
    adb = AsyncDatabase(url)
    assert adb.url.drivername == "postgresql+asyncpg"
    assert adb.lazy_begin
    block_modules(monkeypatch, "asyncpg")
    with pytest.raises(DriverNotInstalledError) as caught:
        AsyncDatabase(url)
    message = str(caught.value)
    assert "psycopg, asyncpg" in message
    assert 'pip install "uow-repositories[postgres]" or "uow-repositories[asyncpg]"' in message
    assert "s3cret" not in message


def test_a_sync_database_keeps_its_sync_drivers_for_a_url_without_one() -> None:
    assert Database("sqlite:///app.db").url.drivername == "sqlite"
    assert Database("postgresql://app@db.example.com/app").url.drivername == "postgresql+psycopg"


def test_a_sync_only_driver_named_in_an_async_url_is_refused_before_any_connection() -> None:
    with pytest.raises(InvalidRequestError, match="not async"):
        AsyncDatabase("sqlite+pysqlite:///app.db")


# -- issue 13: migrations -----------------------------------------------------------------------


def test_the_migrations_extra_brings_alembic_and_the_test_extra_does_too() -> None:
    assert extra("migrations") == {"alembic"}
    assert extra("migrations") <= extra("test")


def test_migrations_without_alembic_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block_modules(monkeypatch, "alembic")
    monkeypatch.delitem(sys.modules, "uow.migrations", raising=False)  # restored afterwards
    with pytest.raises(ImportError) as caught:
        importlib.import_module("uow.migrations")
    assert str(caught.value) == (
        "uow.migrations needs 'alembic', which is not installed: "
        'pip install "uow-repositories[migrations]"'
    )
    assert caught.value.name == "alembic"
