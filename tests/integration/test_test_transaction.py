"""`db.test_transaction()` / `adb.test_transaction()` on SQLite and PostgreSQL: every session of
the Database opened inside joins one outer transaction, a unit of work's COMMIT releases a
savepoint and runs its on_commit callbacks, and everything is rolled back at the end; also under
a container override and the FastAPI and Flask test clients. With `uow.testing`'s
`assert_num_statements` and `capture_on_commit_callbacks`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import containers, providers
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask
from sqlalchemy import Column, Integer, MetaData, Table, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from repositories import AsyncRepository
from tests.async_facade import async_url
from tests.conftest import fresh_database
from tests.models import AppUnitOfWork, User
from uow import AsyncDatabase, AsyncUnitOfWork, Database, UnitOfWorkError
from uow.containers import DatabaseContainer
from uow.integrations.fastapi import DatabaseMiddleware
from uow.integrations.flask import init_app
from uow.testing import assert_num_statements, capture_on_commit_callbacks


class Boom(Exception):
    """The error the failing blocks raise."""


def committed_count(db: Database) -> int:
    """The users another connection sees: only committed rows."""
    with db.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(User)).scalar_one())


def test_units_of_work_commit_inside_and_everything_is_rolled_back_at_exit(
    db: Database, uow: AppUnitOfWork
) -> None:
    ran: list[int] = []
    with db.test_transaction():
        with uow:
            ada = uow.users.create(email="ada@example.com", name="Ada")
            uow.on_commit(lambda: ran.append(ada.id))
        assert ran == [ada.id]  # run as after a commit, at the block's exit
        with uow:
            assert [u.email for u in uow.users.all()] == ["ada@example.com"]
        with db.Session() as session:  # a plain session joins too
            assert session.scalar(select(func.count()).select_from(User)) == 1
        assert db.s.execute(select(func.count()).select_from(User)).scalar_one() == 1
        assert committed_count(db) == 0  # nothing really committed
    assert committed_count(db) == 0
    with uow:
        assert uow.users.count() == 0
    assert db.engine.pool.checkedout() == 0


def test_read_only_blocks_join_too(db: Database, uow: AppUnitOfWork) -> None:
    # A read-only block's session joins the outer connection, whose transaction is open: it
    # cannot be made READ ONLY there, and needs not be (the checks before SQL still apply).
    with db.test_transaction():
        with uow:
            uow.users.create(email="ada@example.com", name="Ada")
        with uow.read_only():
            assert uow.users.count() == 1
            with pytest.raises(UnitOfWorkError, match="read_only"):
                uow.users.create(email="grace@example.com", name="Grace")
        with uow:
            assert uow.users.count() == 1
    assert committed_count(db) == 0


def test_an_exception_rolls_back_its_block_only_and_exit_rolls_back_after_a_failure(
    db: Database, uow: AppUnitOfWork
) -> None:
    ran: list[str] = []
    with pytest.raises(Boom), db.test_transaction():
        with uow:
            uow.users.create(email="kept@example.com", name="Kept")
        with pytest.raises(Boom), uow:
            uow.users.create(email="lost@example.com", name="Lost")
            uow.on_commit(lambda: ran.append("lost"))
            raise Boom
        with uow:
            uow.users.create(email="outer@example.com", name="Outer")
            with pytest.raises(Boom), uow:  # nested: a savepoint inside the block's savepoint
                uow.users.create(email="inner@example.com", name="Inner")
                uow.on_commit(lambda: ran.append("inner"))
                raise Boom
            uow.on_commit(lambda: ran.append("outer"))
        with uow:
            emails = sorted(u.email for u in uow.users.all())
        assert emails == ["kept@example.com", "outer@example.com"]
        assert ran == ["outer"]
        raise Boom  # a failing test
    with uow:
        assert uow.users.count() == 0


def test_a_failed_write_inside_rolls_back_to_the_block_and_the_transaction_goes_on(
    db: Database, uow: AppUnitOfWork
) -> None:
    with db.test_transaction():
        with uow:
            uow.users.create(email="ada@example.com", name="Ada")
        with pytest.raises(IntegrityError), uow:
            uow.users.create(email="ada@example.com", name="Twin")
        with uow:
            assert uow.users.count() == 1
    with uow:
        assert uow.users.count() == 0


def test_uow_commit_inside_releases_the_savepoint_and_runs_the_callbacks(
    db: Database, uow: AppUnitOfWork
) -> None:
    ran: list[str] = []
    with db.test_transaction():
        with uow:
            uow.users.create(email="ada@example.com", name="Ada")
            uow.on_commit(lambda: ran.append("first"))
            uow.commit()
            assert ran == ["first"]
            uow.users.create(email="bob@example.com", name="Bob")
            uow.rollback()  # back to the commit, not to the start
            assert uow.users.count() == 1
            uow.set_rollback(True)
            uow.users.create(email="eve@example.com", name="Eve")
        with uow:
            assert [u.email for u in uow.users.all()] == ["ada@example.com"]
    with uow:
        assert uow.users.count() == 0


def test_the_outer_transaction_is_begun_on_the_server_before_any_write(
    db: Database, uow: AppUnitOfWork
) -> None:
    with db.test_transaction() as connection:
        driver: Any = connection.connection.dbapi_connection
        if db.url.get_backend_name() == "postgresql":
            assert driver.info.transaction_status.name == "INTRANS"  # psycopg asks no server
        else:
            assert driver.in_transaction


def test_test_transaction_refuses_what_could_not_join(db: Database, uow: AppUnitOfWork) -> None:
    with db.test_transaction():
        with pytest.raises(UnitOfWorkError, match="already inside a test transaction"):
            db.test_transaction().__enter__()
    with uow, pytest.raises(UnitOfWorkError, match="inside a `with uow:` block"):
        db.test_transaction().__enter__()
    db.s.execute(text("SELECT 1"))
    with pytest.raises(UnitOfWorkError, match=r"db\.s\.remove\(\)"):
        db.test_transaction().__enter__()
    db.s.remove()
    # The factory is left as it was: sessions outside bind to the engine again.
    with db.test_transaction():
        pass
    assert db.Session.kw["bind"] is db.engine
    assert "join_transaction_mode" not in db.Session.kw


class Service:
    """A service the container builds, as the app's code would."""

    def __init__(self, uow: AppUnitOfWork) -> None:
        self.uow = uow

    def register(self, email: str) -> int:
        with self.uow:
            return self.uow.users.create(email=email, name="Ada").id

    def count(self) -> int:
        with self.uow:
            return self.uow.users.count()


class Container(containers.DeclarativeContainer):
    db = providers.Container(DatabaseContainer)
    uow = providers.Singleton(AppUnitOfWork, db.database)
    service = providers.Factory(Service, uow=uow)


def test_with_the_container_overridden(db: Database) -> None:
    container = Container()
    container.db.database.override(providers.Object(db))
    try:
        with db.test_transaction():
            container.service().register("ada@example.com")
            assert container.service().count() == 1
        assert container.service().count() == 0
    finally:
        container.db.database.reset_override()


def fastapi_app(db: Database) -> FastAPI:
    app = FastAPI()
    app.add_middleware(DatabaseMiddleware, databases=[db])
    uow = AppUnitOfWork(db)

    @app.post("/users/{email}")
    def create(email: str) -> dict[str, int]:  # a def endpoint: runs in a worker thread
        with uow:
            user = uow.users.create(email=email, name="Ada")
            uow.on_commit(lambda: None)
        return {"id": user.id}

    @app.get("/users")
    def count() -> dict[str, int]:
        return {"users": db.s.execute(select(func.count()).select_from(User)).scalar_one()}

    return app


def test_fastapi_test_client_requests_join(db: Database, uow: AppUnitOfWork) -> None:
    with TestClient(fastapi_app(db)) as client, db.test_transaction():
        assert client.post("/users/ada@example.com").status_code == 200
        with uow:
            assert [u.email for u in uow.users.all()] == ["ada@example.com"]
            uow.users.create(email="bob@example.com", name="Bob")
        assert client.get("/users").json() == {"users": 2}
        assert committed_count(db) == 0
    with uow:
        assert uow.users.count() == 0


def test_flask_test_client_requests_join(db: Database, uow: AppUnitOfWork) -> None:
    app = Flask(__name__)
    init_app(app, db)
    app_uow = AppUnitOfWork(db)

    @app.post("/users/<email>")
    def create(email: str) -> dict[str, int]:
        with app_uow:
            return {"id": app_uow.users.create(email=email, name="Ada").id}

    @app.get("/users")
    def count() -> dict[str, int]:
        return {"users": db.s.execute(select(func.count()).select_from(User)).scalar_one()}

    client = app.test_client()
    with db.test_transaction():
        assert client.post("/users/ada@example.com").status_code == 200
        assert client.get("/users").json == {"users": 1}
        assert committed_count(db) == 0
    with uow:
        assert uow.users.count() == 0


# -- uow.testing ----------------------------------------------------------------------------------


def test_assert_num_statements_passes_on_the_count_and_lists_the_statements_otherwise(
    db: Database, uow: AppUnitOfWork
) -> None:
    with assert_num_statements(db, 1), uow:
        uow.users.count()
    with pytest.raises(AssertionError) as failure, assert_num_statements(db, 1), uow:
        uow.users.count()
        uow.users.filter(email="ada@example.com").exists()
    message = str(failure.value)
    assert message.startswith("expected 1 statement, 2 ran:\n  1. SELECT count(*)")
    assert "\n  2. SELECT" in message
    with pytest.raises(TypeError, match="non-negative int"), assert_num_statements(db, -1):
        pass
    with db.test_transaction(), assert_num_statements(db, 3) as log, uow:
        uow.users.count()  # SAVEPOINT, SELECT, RELEASE SAVEPOINT
    assert [s.split()[0] for s in log.statements] == ["SAVEPOINT", "SELECT", "RELEASE"]


def test_capture_on_commit_callbacks_collects_instead_of_running(
    db: Database, uow: AppUnitOfWork
) -> None:
    ran: list[str] = []

    def mail() -> None:
        ran.append("mail")

    def dropped() -> None:
        ran.append("dropped")

    with db.test_transaction():
        with capture_on_commit_callbacks(db) as callbacks:
            with uow:
                uow.on_commit(mail)
            with pytest.raises(Boom), uow:
                uow.on_commit(dropped)
                raise Boom
            assert ran == []
        assert callbacks == [mail]
        assert ran == []
        with capture_on_commit_callbacks(db, execute=True) as callbacks:
            with uow:
                uow.on_commit(mail)
                # a callback whose own unit of work commits: its callback runs too
                uow.on_commit(lambda: committing(uow, ran))
        assert ran == ["mail", "nested"]
        assert len(callbacks) == 3
        with uow:  # no capture any more: callbacks run at commit
            uow.on_commit(mail)
        assert ran == ["mail", "nested", "mail"]


def committing(uow: AppUnitOfWork, ran: list[str]) -> None:
    with uow:
        uow.on_commit(lambda: ran.append("nested"))


def test_capture_on_commit_callbacks_sees_a_request_served_in_another_thread(
    db: Database,
) -> None:
    with TestClient(fastapi_app(db)) as client, db.test_transaction():
        with capture_on_commit_callbacks(db) as callbacks:
            client.post("/users/ada@example.com")
        assert len(callbacks) == 1


# -- async ----------------------------------------------------------------------------------------


class AsyncUow(AsyncUnitOfWork):
    users: AsyncRepository[User]


ASYNC_STACKS = ["sqlite-aiosqlite", "postgresql-asyncpg", "postgresql-psycopg-async"]


@pytest.fixture(params=ASYNC_STACKS)
def adb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AsyncDatabase]:
    backend, _, face = str(request.param).partition("-")
    with fresh_database(backend, tmp_path) as database:
        yield AsyncDatabase(async_url(database.url.render_as_string(hide_password=False), face))


async def test_async_read_only_blocks_join_too(adb: AsyncDatabase) -> None:
    uow = AsyncUow(adb)
    try:
        async with adb.test_transaction():
            async with uow:
                await uow.users.create(email="ada@example.com", name="Ada")
            async with uow.read_only():
                assert await uow.users.count() == 1
    finally:
        await adb.dispose()


async def test_async_units_of_work_join_and_everything_is_rolled_back(adb: AsyncDatabase) -> None:
    uow = AsyncUow(adb)
    ran: list[str] = []

    async def notify() -> None:
        ran.append("notified")

    try:
        with pytest.raises(Boom):
            async with adb.test_transaction():
                async with uow:
                    await uow.users.create(email="ada@example.com", name="Ada")
                    uow.on_commit(notify)
                assert ran == ["notified"]
                with pytest.raises(Boom):
                    async with uow:
                        await uow.users.create(email="lost@example.com", name="Lost")
                        async with uow:
                            await uow.users.create(email="inner@example.com", name="Inner")
                        raise Boom
                async with adb.Session() as session:
                    assert await session.scalar(select(func.count()).select_from(User)) == 1

                async def in_a_task() -> int:  # another context: its own adb.s, joined too
                    try:
                        return int(await adb.s.scalar(select(func.count()).select_from(User)))
                    finally:
                        await adb.s.remove()

                assert await asyncio.create_task(in_a_task()) == 1
                async with capture_on_commit_callbacks(adb, execute=True) as callbacks:
                    async with uow:
                        uow.on_commit(notify)
                    assert ran == ["notified"]
                assert ran == ["notified", "notified"]
                assert callbacks == [notify]
                with assert_num_statements(adb, 3):
                    async with uow:
                        assert await uow.users.count() == 1
                raise Boom
        async with uow:
            assert await uow.users.count() == 0
    finally:
        await adb.dispose()


def test_create_and_drop_all_inside_join_the_test_transaction(db: Database) -> None:
    # An app's start-up create_all (the example apps' shortcut for migrations) runs inside the
    # test transaction: on SQLite a connection of its own would wait out the busy timeout for
    # the write lock the test transaction holds.
    extra = MetaData()
    Table("scratch", extra, Column("id", Integer, primary_key=True))
    with db.test_transaction() as connection:
        db.create_all(extra)
        assert "scratch" in inspect(connection).get_table_names()
    with db.engine.connect() as connection:
        assert "scratch" not in inspect(connection).get_table_names()  # rolled back


async def test_async_create_all_inside_joins_the_test_transaction(adb: AsyncDatabase) -> None:
    extra = MetaData()
    Table("scratch", extra, Column("id", Integer, primary_key=True))
    async with adb.test_transaction() as connection:
        await adb.create_all(extra)
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert "scratch" in names
    async with adb.engine.connect() as connection:
        names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "scratch" not in names
    await adb.dispose()
