"""Lazy BEGIN on the async drivers, counted where it happens: PostgreSQL's log, SQLite's trace.

The async twin of tests/integration/test_round_trips.py, on asyncpg, async psycopg and aiosqlite
(the `async_wired` fixture of tests/server_log.py). What the server received is read, not what
SQLAlchemy's events saw: the BEGIN, COMMIT and ROLLBACK the library and the drivers send by
themselves never pass through those events (asyncpg's least of all: its adapter begins and ends
transactions through asyncpg's own API).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Integer, cast, func, literal, select, text
from sqlalchemy.exc import DBAPIError

from repositories import AsyncRepository
from tests.models import Base, Post, User
from tests.server_log import (
    AsyncWire,
    async_postgres_url,
    async_wire_database,
    server_statements,
    sqlite_statements,
)
from uow import AsyncDatabase, AsyncUnitOfWork

SELECT_USER = "SELECT users.id, users.email, users.name, users.age FROM users"


class AppAsyncUnitOfWork(AsyncUnitOfWork):
    users: AsyncRepository[User]
    posts: AsyncRepository[Post]


def kinds(statements: list[str]) -> list[str]:
    """Each statement's first words, enough to tell them apart (asyncpg's own transaction
    statements end with a semicolon; SQLite's BEGIN IMMEDIATE counts as BEGIN)."""
    out = []
    for statement in statements:
        words = statement.rstrip(";").split()
        first = " ".join(words[:2]) if words[0] in ("ROLLBACK", "RELEASE") else words[0]
        out.append(first + (" FOR UPDATE" if statement.endswith("FOR UPDATE") else ""))
    return out


async def committed_emails(adb: AsyncDatabase) -> set[str]:
    """The user emails a brand-new session sees: what has really been committed."""
    async with adb.Session() as other:
        return set((await other.scalars(select(User.email))).all())


# -- every async driver -------------------------------------------------------------------------


async def test_a_read_only_get_sends_exactly_one_statement(async_wired: AsyncWire) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            assert await uow.users.get(1) is not None
    # No BEGIN, no COMMIT or ROLLBACK, no ping at checkout, no reset when the connection goes
    # back to the pool.
    assert len(sent) == 1, sent
    assert sent[0].startswith(f"{SELECT_USER} WHERE users.id = ")


async def test_a_first_or_create_hit_sends_exactly_one_statement(async_wired: AsyncWire) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            found = await uow.users.first_or_create(
                email="ada@example.com", defaults={"name": "Other"}
            )
            assert found.name == "Ada"
    assert kinds(sent) == ["SELECT"]


async def test_a_first_or_create_miss_sends_no_savepoint_when_it_is_the_first_write(
    async_wired: AsyncWire,
) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            await uow.users.first_or_create(email="bob@example.com", defaults={"name": "Bob"})
    assert kinds(sent) == ["SELECT", "BEGIN", "INSERT", "COMMIT"]
    assert "ON CONFLICT DO NOTHING RETURNING" in sent[2]
    if async_wired.is_sqlite:
        assert sent[1] == "BEGIN IMMEDIATE"
    assert await committed_emails(async_wired.adb) == {"ada@example.com", "bob@example.com"}


async def test_begin_goes_just_before_the_first_write_and_commit_ends_it(
    async_wired: AsyncWire,
) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            await uow.users.count()
            await uow.users.create(email="bob@example.com", name="Bob")
            await uow.users.count()
    assert kinds(sent) == ["SELECT", "BEGIN", "INSERT", "SELECT", "COMMIT"]
    assert await committed_emails(async_wired.adb) == {"ada@example.com", "bob@example.com"}


async def test_a_create_or_first_conflict_aborts_nothing(async_wired: AsyncWire) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            found = await uow.users.create_or_first(
                email="ada@example.com", defaults={"name": "Other"}
            )
            assert found.name == "Ada"
    # The INSERT returns no row instead of an error; the winner is read. No SAVEPOINT, no
    # ROLLBACK TO: nothing failed.
    assert kinds(sent) == ["BEGIN", "INSERT", "SELECT", "COMMIT"]


async def test_update_or_create_begins_before_its_for_update_read(async_wired: AsyncWire) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            user, created = await uow.users.update_or_create(
                email="ada@example.com", defaults={"age": 36}
            )
            assert (user.age, created) == (36, False)
    read = "SELECT" if async_wired.is_sqlite else "SELECT FOR UPDATE"  # SQLite: BEGIN IMMEDIATE
    # The SAVEPOINT stays even as the block's first write: the update is a flush.
    assert kinds(sent) == ["BEGIN", "SAVEPOINT", read, "UPDATE", "RELEASE SAVEPOINT", "COMMIT"]


async def test_after_an_earlier_write_a_miss_keeps_its_savepoint(async_wired: AsyncWire) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            await uow.users.create(email="bob@example.com", name="Bob")
            await uow.users.create_or_first(email="carl@example.com", defaults={"name": "Carl"})
    assert kinds(sent) == ["BEGIN", "INSERT", "SAVEPOINT", "INSERT", "RELEASE SAVEPOINT", "COMMIT"]


async def test_a_block_that_raises_before_writing_sends_no_rollback(
    async_wired: AsyncWire,
) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent, pytest.raises(KeyError):
        async with uow:
            await uow.users.count()
            raise KeyError("application error")
    assert kinds(sent) == ["SELECT"]


async def test_a_block_that_raises_after_writing_rolls_back_on_the_server(
    async_wired: AsyncWire,
) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent, pytest.raises(KeyError):
        async with uow:
            await uow.users.create(email="bob@example.com", name="Bob")
            raise KeyError("application error")
    assert kinds(sent) == ["BEGIN", "INSERT", "ROLLBACK"]
    assert await committed_emails(async_wired.adb) == {"ada@example.com"}
    with async_wired.statements() as sent:  # the connection went back with no transaction
        async with uow:
            assert await uow.users.count() == 1
    assert kinds(sent) == ["SELECT"]


async def test_reads_before_the_first_write_see_each_commit_as_read_committed_does(
    async_wired: AsyncWire,
) -> None:
    adb = async_wired.adb
    uow = AppAsyncUnitOfWork(adb)
    async with uow:
        assert await uow.users.count() == 1
        async with adb.Session() as other, other.begin():
            other.add(User(email="bob@example.com", name="Bob"))
        assert await uow.users.count() == 2  # as inside a READ COMMITTED transaction


async def test_a_failed_read_before_the_first_write_leaves_the_block_usable(
    async_wired: AsyncWire,
) -> None:
    if async_wired.is_sqlite:
        pytest.skip("SQLite casts any text to an integer: the read cannot fail")
    adb = async_wired.adb
    uow = AppAsyncUnitOfWork(adb)
    async with uow:
        with pytest.raises(DBAPIError, match=r"(?i)invalid input"):
            await uow.session.execute(select(cast(literal("not a number"), Integer)))
        await uow.users.create(email="bob@example.com", name="Bob")
    assert await committed_emails(adb) == {"ada@example.com", "bob@example.com"}


async def test_text_sql_counts_as_a_write(async_wired: AsyncWire) -> None:
    # SQL text cannot be told apart from a write: it begins the transaction first.
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            await uow.session.execute(text("SELECT 1"))
    assert kinds(sent) == ["BEGIN", "SELECT", "COMMIT"]


async def test_a_server_side_stream_begins_first_where_the_server_needs_one(
    async_wired: AsyncWire,
) -> None:
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            emails = [user.email async for user in uow.users.filter().iterator(chunk_size=10)]
    assert emails == ["ada@example.com"]
    if async_wired.is_sqlite:
        assert kinds(sent) == ["SELECT"]  # SQLite streams without a transaction
    else:
        # A PostgreSQL cursor lives in a transaction: BEGIN first (asyncpg refuses a cursor
        # outside one), and the read-only transaction ends at the block's end.
        assert kinds(sent)[0] == "BEGIN"
        assert kinds(sent)[-1] in ("COMMIT", "ROLLBACK")


# -- PostgreSQL: snapshot isolation and the opt-out ---------------------------------------------


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
async def test_snapshot_isolation_begins_eagerly_and_keeps_its_snapshot(
    async_wired: AsyncWire, level: str
) -> None:
    if async_wired.is_sqlite:
        pytest.skip("PostgreSQL's isolation levels")
    adb, name = async_wire_database(async_wired.driver, isolation_level=level)
    assert not adb.lazy_begin
    uow = AppAsyncUnitOfWork(adb)
    try:
        async with uow:  # connect first: the dialect's own queries
            await uow.users.count()
        with server_statements(name) as sent:
            async with uow:
                assert await uow.users.count() == 1
                async with async_wired.adb.Session() as other, other.begin():
                    other.add(User(email="bob@example.com", name="Bob"))
                assert await uow.users.count() == 1  # the snapshot taken by the first statement
        assert kinds(sent) == ["BEGIN", "SELECT", "SELECT", "COMMIT"]
        assert sent[0].rstrip(";") == f"BEGIN ISOLATION LEVEL {level}"
        assert await committed_emails(adb) == {"ada@example.com", "bob@example.com"}
    finally:
        await adb.dispose()


async def test_a_server_default_of_repeatable_read_makes_begin_eager(
    async_wired: AsyncWire,
) -> None:
    if async_wired.is_sqlite:
        pytest.skip("PostgreSQL's isolation levels")
    setting = {"default_transaction_isolation": "repeatable read"}
    if async_wired.driver == "asyncpg":
        options: dict[str, object] = {"connect_args": {"server_settings": setting}}
    else:
        options = {
            "connect_args": {"options": "-c default_transaction_isolation=repeatable\\ read"}
        }
    adb = AsyncDatabase(async_wired.adb.url, engine_options=options)
    uow = AppAsyncUnitOfWork(adb)
    try:
        async with uow:
            assert await uow.users.count() == 1
            async with async_wired.adb.Session() as other, other.begin():
                other.add(User(email="bob@example.com", name="Bob"))
            assert await uow.users.count() == 1  # one snapshot, taken by the first statement
    finally:
        await adb.dispose()


async def test_lazy_begin_can_be_turned_off(async_wired: AsyncWire) -> None:
    if async_wired.is_sqlite:
        adb = AsyncDatabase(async_wired.adb.url, lazy_begin=False)
        tracing = sqlite_statements(adb)
    else:
        adb, name = async_wire_database(async_wired.driver)
        adb = AsyncDatabase(adb.url, lazy_begin=False, engine_options=_named(adb, name))
        tracing = None
    try:
        if tracing is not None:
            with tracing as traced:
                async with AppAsyncUnitOfWork(adb) as uow:
                    await uow.users.count()
            sent = [s for s in traced if not s.startswith("PRAGMA")]
            assert sent[0] == "BEGIN IMMEDIATE"
        else:
            async with AppAsyncUnitOfWork(adb) as warm:  # connect first
                await warm.users.count()
            with server_statements(name) as sent:
                async with AppAsyncUnitOfWork(adb) as uow:
                    await uow.users.count()
        assert kinds(sent) == ["BEGIN", "SELECT", "COMMIT"]
    finally:
        await adb.dispose()


def _named(adb: AsyncDatabase, name: str) -> dict[str, object]:
    """The engine options that tag an async PostgreSQL engine's connections with `name`."""
    if adb.url.get_driver_name() == "asyncpg":
        return {"connect_args": {"server_settings": {"application_name": name}}}
    return {"connect_args": {"application_name": name}}


async def test_a_function_call_begins_first_on_postgresql(async_wired: AsyncWire) -> None:
    if async_wired.is_sqlite:
        pytest.skip("set_config is PostgreSQL's")
    uow = AppAsyncUnitOfWork(async_wired.adb)
    with async_wired.statements() as sent:
        async with uow:
            # Not known to be side-effect free: it may write, or set transaction state.
            await uow.session.execute(select(func.set_config("uow.test", "1", True)))
            setting = await uow.session.scalar(select(func.current_setting("uow.test")))
            assert setting == "1"  # the same transaction: the setting is still there
    assert kinds(sent) == ["BEGIN", "SELECT", "SELECT", "COMMIT"]


# -- SQLite --------------------------------------------------------------------------------------


async def test_sqlite_read_only_blocks_send_no_begin_and_take_no_lock(tmp_path: Path) -> None:
    adb = AsyncDatabase(f"sqlite+aiosqlite:///{tmp_path / 'lazy.db'}")
    await adb.create_all(Base.metadata)
    await adb.dispose()
    uow = AppAsyncUnitOfWork(adb)
    writer = sqlite3.connect(tmp_path / "lazy.db", timeout=0.1, isolation_level=None)
    try:
        with sqlite_statements(adb) as traced:
            writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            async with uow:
                assert await uow.users.count() == 0  # would wait 30 s for the lock if it took it
            writer.execute("ROLLBACK")
            async with uow:
                await uow.users.create(email="ada@example.com", name="Ada")
        statements = [s for s in traced if not s.startswith("PRAGMA")]
        assert kinds(statements) == ["SELECT", "BEGIN", "INSERT", "COMMIT"]
        assert statements[1] == "BEGIN IMMEDIATE"
    finally:
        writer.close()
        await adb.dispose()


async def test_postgresql_urls_of_the_test_server_name_each_async_driver() -> None:
    # The fixture's URLs are what they say (a typo would test psycopg twice).
    for driver in ("psycopg", "asyncpg"):
        adb = AsyncDatabase(async_postgres_url(driver))
        try:
            assert adb.engine.dialect.driver == driver
            assert adb.engine.dialect.is_async
            assert adb.lazy_begin
        finally:
            await adb.dispose()


async def test_the_psycopg_async_spelling_of_the_url_gets_lazy_begin_too() -> None:
    adb = AsyncDatabase(async_postgres_url("psycopg_async"))  # SQLAlchemy's other name for it
    uow = AppAsyncUnitOfWork(adb)
    now = select(func.now())  # the time the statement's transaction began
    try:
        assert adb.lazy_begin
        async with uow:
            # Two reads outside a transaction: two transactions of their own, two times.
            assert await uow.session.scalar(now) != await uow.session.scalar(now)
    finally:
        await adb.dispose()
