"""The FastAPI integration with AsyncDatabases, through FastAPI's real TestClient, on SQLite
(aiosqlite) and PostgreSQL (asyncpg).

An `async def` endpoint runs on the event loop; a session it opens through `adb.s` outside a
unit of work stays open (its connection checked out) unless `DatabaseMiddleware` (or the
`session_scope` dependency) closes it, awaited, at the end of the request. Every endpoint
records the session it used, so the tests can check that it was closed, and how many
connections were checked out while it ran.

Each app runs inside `with TestClient(app)`: one event loop for the app's whole life, as a
server has. Pooled async connections belong to the loop that opened them, so the app's
`lifespan` disposes the AsyncDatabase on that loop before it ends.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from repositories import AsyncRepository
from tests.conftest import fresh_database
from tests.models import User
from uow import AsyncDatabase, AsyncSession, AsyncUnitOfWork, Database
from uow.containers import AsyncDatabaseContainer
from uow.integrations.fastapi import DatabaseMiddleware, lifespan, session_scope


class Boom(Exception):
    """The application error the failing endpoints raise."""


class AsyncAppUnitOfWork(AsyncUnitOfWork):
    users: AsyncRepository[User]


@pytest.fixture
def sync_db(backend: str, tmp_path: Path) -> Iterator[Database]:
    """A fresh test database with the tables (sync: it outlives the apps' event loops)."""
    with fresh_database(backend, tmp_path) as database:
        yield database


@pytest.fixture
def async_url(sync_db: Database) -> str:
    """`sync_db`'s URL with an async driver: asyncpg, or aiosqlite."""
    url = sync_db.url.render_as_string(hide_password=False)
    return url.replace("postgresql+psycopg://", "postgresql+asyncpg://").replace(
        "sqlite://", "sqlite+aiosqlite://"
    )


# A leak exhausts the pool: a request then fails in a few seconds rather than 30.
POOL_TIMEOUT = 3


@pytest.fixture
def adb(async_url: str) -> AsyncDatabase:
    """An AsyncDatabase on the test database; the app using it disposes it (its lifespan)."""
    return AsyncDatabase(async_url, engine_options={"pool_timeout": POOL_TIMEOUT})


async def count_users(adb: AsyncDatabase) -> int:
    return int((await adb.s.execute(select(func.count()).select_from(User))).scalar_one())


def committed_emails(db: Database) -> list[str]:
    with db.Session() as fresh:
        return list(fresh.scalars(select(User.email).order_by(User.email)))


async def read(adb: AsyncDatabase, sessions: list[AsyncSession]) -> dict[str, int]:
    """An endpoint's body: read through `adb.s` outside any unit of work; record the session."""
    users = await count_users(adb)
    sessions.append(adb.s())
    return {"users": users, "checked_out": adb.engine.pool.checkedout()}


def add_reading_routes(
    app: FastAPI | APIRouter, adb: AsyncDatabase, sessions: list[AsyncSession]
) -> None:
    @app.get("/read")
    async def read_async() -> dict[str, int]:
        return await read(adb, sessions)

    @app.get("/read-fail")
    async def fail_async() -> None:
        await read(adb, sessions)
        raise Boom

    @app.get("/tasks")
    async def in_tasks() -> dict[str, int]:
        # Two tasks started from the request: each has a copy of its context, so each opens
        # a session of its own, and the scope records both.
        await asyncio.gather(read(adb, sessions), read(adb, sessions))
        return {"sessions": len({id(session) for session in sessions[-2:]})}


def app_with_middleware(adb: AsyncDatabase, sessions: list[AsyncSession]) -> FastAPI:
    app = FastAPI(lifespan=lifespan(adb))
    app.add_middleware(DatabaseMiddleware, databases=[adb])
    add_reading_routes(app, adb, sessions)
    return app


def assert_all_closed(adb: AsyncDatabase, sessions: list[AsyncSession]) -> None:
    assert sessions
    assert [session for session in sessions if session.in_transaction()] == []
    assert adb.engine.pool.checkedout() == 0


# -- DatabaseMiddleware ------------------------------------------------------------------------


def test_an_async_endpoint_reading_through_adb_s_leaves_no_session_after_the_request(
    adb: AsyncDatabase,
) -> None:
    sessions: list[AsyncSession] = []
    with TestClient(app_with_middleware(adb, sessions)) as client:
        response = client.get("/read")

        assert response.status_code == 200
        assert response.json() == {"users": 0, "checked_out": 1}
        assert len(sessions) == 1
        assert_all_closed(adb, sessions)


def test_an_async_endpoint_that_raises_leaves_no_session_after_the_request(
    adb: AsyncDatabase,
) -> None:
    sessions: list[AsyncSession] = []
    app = app_with_middleware(adb, sessions)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/read-fail").status_code == 500
        assert len(sessions) == 1
        assert_all_closed(adb, sessions)


def test_the_sessions_of_tasks_the_request_started_are_closed_too(adb: AsyncDatabase) -> None:
    sessions: list[AsyncSession] = []
    with TestClient(app_with_middleware(adb, sessions)) as client:
        assert client.get("/tasks").json() == {"sessions": 2}
        assert len(sessions) == 2
        assert_all_closed(adb, sessions)


def test_two_hundred_mixed_requests_leave_no_connection_checked_out(adb: AsyncDatabase) -> None:
    sessions: list[AsyncSession] = []
    paths = ["/read", "/read-fail", "/tasks"]
    statuses: dict[str, set[int]] = {path: set() for path in paths}
    app = app_with_middleware(adb, sessions)
    with TestClient(app, raise_server_exceptions=False) as client:
        for number in range(200):
            path = paths[number % len(paths)]
            statuses[path].add(client.get(path).status_code)
            assert adb.engine.pool.checkedout() == 0, number
        assert_all_closed(adb, sessions)
    assert statuses == {"/read": {200}, "/read-fail": {500}, "/tasks": {200}}
    assert len(sessions) == 67 + 67 + 2 * 66


def test_a_websocket_is_one_request_its_session_closed_when_it_closes(
    adb: AsyncDatabase,
) -> None:
    sessions: list[AsyncSession] = []
    app = app_with_middleware(adb, sessions)

    @app.websocket("/ws")
    async def counting(websocket: WebSocket) -> None:
        await websocket.accept()
        for _ in range(2):
            await websocket.receive_text()
            await websocket.send_json(await read(adb, sessions))
        await websocket.close()

    with TestClient(app) as client:
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text("count")
            assert websocket.receive_json() == {"users": 0, "checked_out": 1}
            websocket.send_text("again")  # the same context: the same session, still open
            assert websocket.receive_json() == {"users": 0, "checked_out": 1}
        client.get("/read")  # a request after the close: the websocket's scope has ended
        assert sessions[0] is sessions[1]
        assert_all_closed(adb, sessions)


def test_without_the_middleware_an_async_endpoint_leaves_its_connection_checked_out(
    adb: AsyncDatabase,
) -> None:
    """The control: the checks above can fail. The leaked session is closed by hand."""
    sessions: list[AsyncSession] = []
    app = FastAPI(lifespan=lifespan(adb))
    add_reading_routes(app, adb, sessions)
    with TestClient(app) as client:
        assert client.get("/read").status_code == 200
        assert len(sessions) == 1
        assert sessions[0].in_transaction()
        assert adb.engine.pool.checkedout() == 1
        client.portal.call(sessions[0].close)
        assert adb.engine.pool.checkedout() == 0


def test_one_middleware_serves_a_database_and_an_async_database_together(
    adb: AsyncDatabase, sync_db: Database
) -> None:
    async_sessions: list[AsyncSession] = []
    app = FastAPI(lifespan=lifespan(sync_db, adb))
    app.add_middleware(DatabaseMiddleware, databases=[sync_db, adb])

    @app.get("/both")
    def read_sync() -> dict[str, int]:  # a def endpoint, in the thread pool: the sync face
        users = sync_db.s.execute(select(func.count()).select_from(User)).scalar_one()
        return {"users": users, "checked_out": sync_db.engine.pool.checkedout()}

    add_reading_routes(app, adb, async_sessions)
    with TestClient(app) as client:
        assert client.get("/both").json() == {"users": 0, "checked_out": 1}
        assert client.get("/read").json() == {"users": 0, "checked_out": 1}
        assert sync_db.engine.pool.checkedout() == 0
        assert_all_closed(adb, async_sessions)
        sync_pool, async_pool = sync_db.engine.pool, adb.engine.pool
        assert (sync_pool.checkedin(), async_pool.checkedin()) == (1, 1)
    # The lifespan disposed both engines.
    assert (sync_pool.checkedin(), async_pool.checkedin()) == (0, 0)


# -- the session_scope dependency --------------------------------------------------------------


def test_the_session_scope_dependency_closes_the_async_sessions_of_its_router(
    adb: AsyncDatabase,
) -> None:
    scoped: list[AsyncSession] = []
    unscoped: list[AsyncSession] = []
    router = APIRouter(prefix="/scoped", dependencies=[Depends(session_scope(adb))])
    add_reading_routes(router, adb, scoped)
    app = FastAPI(lifespan=lifespan(adb))
    app.include_router(router)
    add_reading_routes(app, adb, unscoped)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/scoped/read").json() == {"users": 0, "checked_out": 1}
        assert client.get("/scoped/read-fail").status_code == 500
        assert client.get("/scoped/tasks").json() == {"sessions": 2}
        assert len(scoped) == 4
        assert_all_closed(adb, scoped)

        # The routes outside the router get no scope: the session leaks, as without middleware.
        assert client.get("/read").status_code == 200
        assert unscoped[0].in_transaction()
        assert adb.engine.pool.checkedout() == 1
        client.portal.call(unscoped[0].close)
        assert adb.engine.pool.checkedout() == 0


# -- lifespan ----------------------------------------------------------------------------------


def test_lifespan_of_an_async_database_disposes_its_engine_at_shutdown(
    adb: AsyncDatabase,
) -> None:
    sessions: list[AsyncSession] = []
    with TestClient(app_with_middleware(adb, sessions)) as client:
        assert client.get("/read").status_code == 200
        pool = adb.engine.pool
        assert pool.checkedin() == 1
    assert pool.checkedin() == 0
    assert adb.engine.pool is not pool


def test_lifespan_shuts_every_resource_down_even_when_one_fails(
    adb: AsyncDatabase, sync_db: Database
) -> None:
    def broken() -> Database:
        raise Boom

    app = FastAPI(lifespan=lifespan(sync_db, broken, adb))

    @app.get("/touch")
    async def touch() -> int:
        async with adb.Session() as session:
            return int((await session.execute(select(1))).scalar_one())

    client = TestClient(app)
    with pytest.raises(Boom), client:
        assert client.get("/touch").json() == 1
        with sync_db.engine.connect():
            pass
        async_pool, sync_pool = adb.engine.pool, sync_db.engine.pool
        assert (async_pool.checkedin(), sync_pool.checkedin()) == (1, 1)
    assert (async_pool.checkedin(), sync_pool.checkedin()) == (0, 0)


# -- units of work and injected services -------------------------------------------------------


def app_writing_users(adb: AsyncDatabase, sessions: list[AsyncSession]) -> FastAPI:
    uow = AsyncAppUnitOfWork(adb)
    app = FastAPI(lifespan=lifespan(adb))
    app.add_middleware(DatabaseMiddleware, databases=[adb])

    @app.post("/users")
    async def create(email: str) -> dict[str, int]:
        async with uow:
            user = await uow.users.create(email=email, name="async")
            sessions.append(uow.session)
        return {"id": user.id}

    @app.post("/users-fail")
    async def create_then_fail(email: str) -> None:
        async with uow:
            await uow.users.create(email=email, name="async")
            sessions.append(uow.session)
            raise Boom

    return app


def test_an_async_unit_of_work_in_an_endpoint_commits_or_rolls_back(
    adb: AsyncDatabase, sync_db: Database
) -> None:
    sessions: list[AsyncSession] = []
    app = app_writing_users(adb, sessions)
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post("/users", params={"email": "ada@example.com"})
        failed = client.post("/users-fail", params={"email": "bob@example.com"})
        assert created.status_code == 200
        assert isinstance(created.json()["id"], int)
        assert failed.status_code == 500
        assert len(sessions) == 2
        assert_all_closed(adb, sessions)
    assert committed_emails(sync_db) == ["ada@example.com"]


class UserService:
    def __init__(self, uow: AsyncAppUnitOfWork) -> None:
        self.uow = uow

    async def register(self, email: str) -> dict[str, Any]:
        async with self.uow:
            user = await self.uow.users.first_or_create(email=email, defaults={"name": "Ada"})
            return {"id": user.id, "database": id(self.uow.database)}

    async def count(self) -> int:
        async with self.uow:
            return await self.uow.users.count()


class Container(containers.DeclarativeContainer):
    db = providers.Container(AsyncDatabaseContainer)
    uow = providers.Singleton(AsyncAppUnitOfWork, db.async_database)
    user_service = providers.Factory(UserService, uow=uow)


# A default value, not `Annotated`: with postponed annotations `@inject` sees only strings.
INJECTED_SERVICE = Depends(Provide[Container.user_service])
INJECTED_DATABASE = Depends(Provide[Container.db.async_database])


def app_on(container: Container) -> FastAPI:
    app = FastAPI(lifespan=lifespan(container))
    app.add_middleware(DatabaseMiddleware, databases=[container.db.async_database])

    @app.post("/users")
    @inject
    async def register(email: str, service: UserService = INJECTED_SERVICE) -> dict[str, Any]:
        return await service.register(email)

    @app.get("/users/count")
    @inject
    async def count(service: UserService = INJECTED_SERVICE) -> int:
        return await service.count()

    @app.get("/users/count-by-adb-s")
    @inject
    async def count_by_adb_s(database: AsyncDatabase = INJECTED_DATABASE) -> int:
        return await count_users(database)  # outside a unit of work: the middleware closes it

    container.wire(modules=[sys.modules[__name__]])
    return app


def test_an_injected_async_service_runs_on_the_containers_async_database(
    async_url: str, sync_db: Database
) -> None:
    container = Container()
    container.db.config.from_dict({"url": async_url, "pool_timeout": POOL_TIMEOUT})
    try:
        with TestClient(app_on(container)) as client:
            created = client.post("/users", params={"email": "ada@example.com"}).json()
            again = client.post("/users", params={"email": "ada@example.com"}).json()
            assert again == created
            assert client.get("/users/count").json() == 1
            assert client.get("/users/count-by-adb-s").json() == 1
            adb = client.portal.call(container.db.async_database.async_)
            assert created["database"] == id(adb)
            assert adb.engine.pool.checkedout() == 0
            pool = adb.engine.pool
            assert pool.checkedin() == 1
        # The lifespan shut the container's resources down: the engine disposed, awaited.
        assert not container.db.async_database.initialized
        assert pool.checkedin() == 0
    finally:
        container.unwire()
    assert committed_emails(sync_db) == ["ada@example.com"]


def test_an_overridden_async_database_serves_the_injected_services(
    adb: AsyncDatabase, sync_db: Database
) -> None:
    container = Container()
    container.db.async_database.override(providers.Object(adb))
    app = app_on(container)
    try:
        with TestClient(app) as client:
            created = client.post("/users", params={"email": "ada@example.com"}).json()
            assert created["database"] == id(adb)
            assert client.get("/users/count-by-adb-s").json() == 1
            assert adb.engine.pool.checkedout() == 0
            # The container leaves an overriding database alone: its owner disposes it.
            client.portal.call(adb.dispose)
    finally:
        container.unwire()
    assert committed_emails(sync_db) == ["ada@example.com"]
