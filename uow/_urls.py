"""Database URLs as users write them: the driver filled in, and checked to be installed.

Hosting providers hand out `postgres://...` (which SQLAlchemy no longer accepts) or
`postgresql://...` without a driver (which SQLAlchemy maps to one fixed driver, psycopg2 before
SQLAlchemy 2.1 and psycopg after, whether or not it is installed). `Database` and
`DatabaseSettings` both resolve a URL here, so both accept the same URLs and fail the same way.
`AsyncDatabase` too, with async drivers for a URL that names none.
"""

from __future__ import annotations

import importlib.util

from sqlalchemy.engine import URL, make_url

from uow.errors import DriverNotInstalledError

__all__ = ["resolve_url"]

DIST = "uow-repositories"

# PostgreSQL drivers for a URL that names none, in order of preference: psycopg 3 is what the
# `postgres` extra installs and SQLAlchemy's own default from 2.1; psycopg2 is the driver most
# existing installations have; pg8000 is pure Python. asyncpg is missing on purpose: it only
# works with an async engine.
POSTGRESQL_DRIVERS = ("psycopg", "psycopg2", "pg8000")

# The same for async code (AsyncDatabase): psycopg 3 has an async connection, and is what the
# `postgres` extra installs; asyncpg comes with the `asyncpg` extra. SQLite's one async driver
# is aiosqlite (SQLAlchemy's default for `sqlite://`, pysqlite, is sync only).
ASYNC_DRIVERS = {"postgresql": ("psycopg", "asyncpg"), "sqlite": ("aiosqlite",)}

# What to install for a driver SQLAlchemy names; a driver not listed is named as it is.
_INSTALL = {
    ("postgresql", "psycopg"): f'"{DIST}[postgres]"',
    ("postgresql", "asyncpg"): f'"{DIST}[asyncpg]"',
    ("sqlite", "aiosqlite"): f'"{DIST}[aiosqlite]"',
    ("postgresql", "psycopg2"): f'psycopg2-binary (or "{DIST}[postgres]" and a postgresql:// URL)',
    ("postgresql", "pg8000"): "pg8000",
    ("mysql", "mysqldb"): "mysqlclient",
    ("mysql", "pymysql"): "PyMySQL",
}


def resolve_url(url: str | URL, *, check_driver: bool = True, is_async: bool = False) -> URL:
    """The URL with the driver it will use, checked to be importable.

    `postgres://` becomes `postgresql://`; a PostgreSQL URL without a driver gets the first
    installed of psycopg (3), psycopg2 and pg8000, or, for async code, of psycopg (3) and
    asyncpg; a SQLite URL without a driver, in async code, gets aiosqlite. Other URLs are
    returned as parsed.

    Args:
        url: a SQLAlchemy URL, as a string or a `URL`.
        check_driver: import the driver's module now, so a missing driver fails here rather
            than at the first query. Off when the caller hands `create_engine` a module itself.
        is_async: the URL is for `create_async_engine` (an `AsyncDatabase`).

    Raises:
        DriverNotInstalledError: the driver (or, for a URL without one, every candidate) is
            not installed. The message names the package to install, never the URL.
        sqlalchemy.exc.ArgumentError: the text is not a URL, or names no SQLAlchemy dialect
            (`NoSuchModuleError`, with `check_driver` only).
    """
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":  # Heroku's and Fly's spelling; SQLAlchemy dropped it in 1.4
        backend = "postgresql"
    if not driver and is_async and backend in ASYNC_DRIVERS:
        driver = _installed_driver(backend, ASYNC_DRIVERS[backend])
    elif backend == "postgresql" and not driver:
        driver = _installed_driver(backend, POSTGRESQL_DRIVERS)
    if driver:
        parsed = parsed.set(drivername=f"{backend}+{driver}")
    if check_driver:
        _import_driver(parsed)
    return parsed


def _installed_driver(backend: str, drivers: tuple[str, ...]) -> str:
    """The first of `drivers` that is installed, for a `backend` URL that names no driver."""
    for driver in drivers:
        if _is_installed(driver):
            return driver
    title = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}[backend]
    needs = f"one of {', '.join(drivers)}, and none is" if drivers[1:] else f"{drivers[0]}, not"
    # The extras that bring one of them (psycopg2 and pg8000 come with none).
    extras = [_INSTALL[backend, d] for d in drivers if _INSTALL[backend, d].startswith(f'"{DIST}')]
    raise DriverNotInstalledError(
        f"a {title} URL without a driver needs {needs} installed: "
        f"pip install {' or '.join(extras)}",
        name=drivers[0],
    )


def _is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # imported without a spec (built in a test): it is there
        return True


def _import_driver(url: URL) -> None:
    dialect = url.get_dialect()  # NoSuchModuleError when SQLAlchemy has none by that name
    try:
        dialect.import_dbapi()
    except ImportError as err:
        key = (url.get_backend_name(), dialect.driver)
        install = _INSTALL.get(key, err.name or dialect.driver)
        raise DriverNotInstalledError(
            f"{url.drivername} URLs need the {dialect.driver!r} driver, which is not "
            f"installed: pip install {install}",
            name=err.name,
        ) from err
