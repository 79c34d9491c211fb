"""The async face, one operation per unit of work, against plain SQLAlchemy `AsyncSession`.

The same operations as _per_op.py on the same table, measured inside one event loop per async
driver. Each project operation runs in its own `async with uow:` block on the library's
`AsyncDatabase(url)`. Its SQLAlchemy baseline is what a user writes with a plain
`create_async_engine(url)` and default settings: `async with AsyncSession(engine) as s,
s.begin():` for reads and creates, the naive get-or-create for that family. The third column is
the sync project's same operation, on the same database.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import _wire
from _common import Person, Setup, awaitable, best_of_async, fresh_email, named
from _per_op import SEED, operations
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from repositories import AsyncRepository
from uow import AsyncDatabase, AsyncUnitOfWork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from sqlalchemy.engine import URL

# The async drivers measured on each backend: the name printed, and the URL's drivername.
DRIVERS = {
    "sqlite": {"aiosqlite": "sqlite+aiosqlite"},
    "postgresql": {"asyncpg": "postgresql+asyncpg", "psycopg (async)": "postgresql+psycopg"},
}


class BenchAsyncUnitOfWork(AsyncUnitOfWork):
    people: AsyncRepository[Person]


@dataclass(frozen=True)
class AsyncTiming:
    name: str
    baseline: str
    plain: float  # plain SQLAlchemy AsyncSession
    project: float  # the async face
    sync: float  # the sync face, same operation, same database
    sent: dict[str, int]  # statements on the wire for one run (PostgreSQL), by client


def async_operations(
    uow: BenchAsyncUnitOfWork, engine: AsyncEngine
) -> dict[str, tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]]:
    """Per operation name: (the project's coroutine function, the plain AsyncSession one)."""
    pk, email = SEED // 2, f"seed{SEED // 2}@example.com"

    async def plain_get() -> None:
        async with AsyncSession(engine) as s, s.begin():
            await s.get(Person, pk)

    async def project_get() -> None:
        async with uow:
            await uow.people.get(pk)

    async def plain_first() -> None:
        async with AsyncSession(engine) as s, s.begin():
            statement = select(Person).where(Person.email == email).order_by(Person.id).limit(1)
            (await s.scalars(statement)).first()

    async def project_first() -> None:
        async with uow:
            await uow.people.first(email=email)

    async def plain_create() -> None:
        async with AsyncSession(engine) as s, s.begin():
            s.add(Person(email=fresh_email(), name="x"))

    async def project_create() -> None:
        async with uow:
            await uow.people.create(email=fresh_email(), name="x")

    async def project_first_or_create(address: str) -> None:
        async with uow:
            await uow.people.first_or_create(email=address, defaults={"name": "x"})

    async def project_create_or_first() -> None:
        async with uow:
            await uow.people.create_or_first(email=email, defaults={"name": "x"})

    return {
        "get by pk": (project_get, plain_get),
        "first by unique field": (project_first, plain_first),
        "first_or_create hit": (
            lambda: project_first_or_create(email),
            lambda: naive_get_or_create(engine, email),
        ),
        "first_or_create miss": (
            lambda: project_first_or_create(fresh_email()),
            lambda: naive_get_or_create(engine, fresh_email()),
        ),
        "create_or_first conflict": (
            project_create_or_first,
            lambda: naive_create_or_get(engine, email),
        ),
        "create + commit": (project_create, plain_create),
    }


async def naive_get_or_create(engine: AsyncEngine, email: str) -> Person:
    """_per_op.naive_get_or_create, awaited (not race-safe)."""
    async with AsyncSession(engine) as s:
        statement = select(Person).where(Person.email == email).limit(1)
        person = (await s.scalars(statement)).first()
        if person is None:
            person = Person(email=email, name="x")
            s.add(person)
            await s.commit()
        return person


async def naive_create_or_get(engine: AsyncEngine, email: str) -> Person | None:
    """_per_op.naive_create_or_get, awaited."""
    async with AsyncSession(engine) as s:
        s.add(Person(email=email, name="x"))
        try:
            await s.commit()
        except IntegrityError:
            await s.rollback()
            statement = select(Person).where(Person.email == email).limit(1)
            return (await s.scalars(statement)).first()
        return None


def measure(setup: Setup, quick: bool) -> dict[str, list[AsyncTiming]]:
    """Seconds per operation on each async driver of the backend: plain, async, sync."""
    return {
        driver: asyncio.run(_measure(setup, setup.url.set(drivername=drivername), quick))
        for driver, drivername in DRIVERS.get(setup.backend, {}).items()
    }


def tagged(url: URL, application_name: str) -> tuple[str, dict[str, Any]]:
    """`url` and the engine options under which PostgreSQL logs the client as
    `application_name` (see _wire.py)."""
    text = url.render_as_string(hide_password=False)
    if url.get_backend_name() != "postgresql":
        return text, {}
    if url.get_driver_name() == "asyncpg":  # takes server settings, not URL parameters
        return text, {"connect_args": {"server_settings": {"application_name": application_name}}}
    return named(text, application_name), {}


async def _measure(setup: Setup, url: URL, quick: bool) -> list[AsyncTiming]:
    number, rounds = (100, 3) if quick else (300, 7)
    log = _wire.server_log() if setup.backend == "postgresql" else None
    project_url, project_options = tagged(url, "bench-async-project")
    plain_url, plain_options = tagged(url, "bench-async-plain")
    adb = AsyncDatabase(project_url, project_options)
    plain = create_async_engine(plain_url, **plain_options)
    sync = {op.name: op for op in operations(setup)}  # the same operations, sync face
    try:
        timings = []
        for name, (project, baseline) in async_operations(BenchAsyncUnitOfWork(adb), plain).items():
            awaited = {"plain": baseline, "project": project}
            fns = {**awaited, "sync": awaitable(sync[name].project)}
            best = await best_of_async(fns, number, rounds)
            sent = await _sent(log, awaited) if log else {}
            baseline_kind = sync[name].baseline
            timings.append(
                AsyncTiming(name, baseline_kind, best["plain"], best["project"], best["sync"], sent)
            )
        return timings
    finally:
        await adb.dispose()
        await plain.dispose()


async def _sent(log: Path, awaited: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, int]:
    """Statements the server received for one run of each (its log, see _wire.py)."""
    sent = {}
    for client, fn in awaited.items():
        start = log.stat().st_size
        await fn()
        sent[client] = _wire.sent_since(log, start, f"async {client}")
    return sent
