"""The FastAPI integration through FastAPI's real TestClient, on SQLite and PostgreSQL.

FastAPI runs sync endpoints and dependencies in a thread pool, each with a *copy* of the
request's context: a session they open through `db.s` lives in that copy, out of reach of the
request's end, unless `DatabaseMiddleware` (or the `session_scope` dependency) shares one
session per request and closes it. Every endpoint records the session it used, so the tests can
check that it was closed, and how many connections were checked out while it ran.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import pytest
from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.models import AppUnitOfWork, User
from uow import Database, Session
from uow.containers import DatabaseContainer
from uow.integrations.fastapi import DatabaseMiddleware, lifespan, session_scope


class Boom(Exception):
    """The application error the failing endpoints raise."""


def count_users(db: Database) -> int:
    return int(db.s.execute(select(func.count()).select_from(User)).scalar_one())


def committed_emails(db: Database) -> list[str]:
    with db.Session() as fresh:
        return list(fresh.scalars(select(User.email).order_by(User.email)))


def read(db: Database, sessions: list[Session]) -> dict[str, int]:
    """An endpoint's body: read through `db.s` outside any unit of work; record the session."""
    users = count_users(db)
    sessions.append(db.s())
    return {"users": users, "checked_out": db.engine.pool.checkedout()}


def session_of_dependency(request: Request) -> Session:
    """A sync dependency (run in the thread pool) that opens a session through `db.s`."""
    db: Database = request.app.state.db
    count_users(db)
    return db.s()


SessionOfDependency = Annotated[Session, Depends(session_of_dependency)]


def add_reading_routes(app: FastAPI | APIRouter, db: Database, sessions: list[Session]) -> None:
    @app.get("/sync")
    def read_sync() -> dict[str, int]:
        return read(db, sessions)

    @app.get("/async")
    async def read_async() -> dict[str, int]:
        return read(db, sessions)

    @app.get("/sync-fail")
    def fail_sync() -> None:
        read(db, sessions)
        raise Boom

    @app.get("/async-fail")
    async def fail_async() -> None:
        read(db, sessions)
        raise Boom

    @app.get("/same-session")
    def same_session(from_dependency: SessionOfDependency) -> dict[str, int | bool]:
        # FastAPI runs the sync dependency and the sync endpoint in two threads, each with its
        # own copy of the request's context: each gets a session of its own.
        # (No query through it: on SQLite, whose BEGIN takes the write lock, it would wait for
        # the dependency's open transaction.)
        endpoint_session = db.s()
        sessions.append(from_dependency)
        if endpoint_session is not from_dependency:
            sessions.append(endpoint_session)
        return {
            "dependency": id(from_dependency),
            "endpoint": id(endpoint_session),
            "same": from_dependency is endpoint_session,
        }


def app_with_middleware(db: Database, sessions: list[Session]) -> FastAPI:
    app = FastAPI(lifespan=lifespan(db))
    app.state.db = db
    app.add_middleware(DatabaseMiddleware, databases=[db])
    add_reading_routes(app, db, sessions)
    return app


def assert_all_closed(db: Database, sessions: list[Session]) -> None:
    assert sessions
    assert [session for session in sessions if session.in_transaction()] == []
    assert db.engine.pool.checkedout() == 0


# -- DatabaseMiddleware ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/sync", "/async"])
def test_an_endpoint_reading_through_db_s_leaves_no_session_after_the_request(
    db: Database, path: str
) -> None:
    sessions: list[Session] = []
    client = TestClient(app_with_middleware(db, sessions))

    response = client.get(path)

    assert response.status_code == 200
    assert response.json() == {"users": 0, "checked_out": 1}
    assert len(sessions) == 1
    assert_all_closed(db, sessions)


@pytest.mark.parametrize("path", ["/sync-fail", "/async-fail"])
def test_an_endpoint_that_raises_leaves_no_session_after_the_request(
    db: Database, path: str
) -> None:
    sessions: list[Session] = []
    client = TestClient(app_with_middleware(db, sessions), raise_server_exceptions=False)

    response = client.get(path)

    assert response.status_code == 500
    assert len(sessions) == 1
    assert_all_closed(db, sessions)


def test_a_sync_dependency_and_a_sync_endpoint_each_have_a_session_both_closed_at_the_end(
    db: Database,
) -> None:
    sessions: list[Session] = []
    client = TestClient(app_with_middleware(db, sessions))

    first = client.get("/same-session").json()
    second = client.get("/same-session").json()

    assert first["same"] is False
    assert second["same"] is False
    assert len({id(session) for session in sessions}) == 4
    assert_all_closed(db, sessions)


def test_two_hundred_mixed_requests_leave_no_connection_checked_out(db: Database) -> None:
    sessions: list[Session] = []
    paths = ["/sync", "/async", "/sync-fail", "/async-fail", "/same-session"]
    statuses: dict[str, set[int]] = {path: set() for path in paths}
    with TestClient(app_with_middleware(db, sessions), raise_server_exceptions=False) as client:
        for number in range(200):
            path = paths[number % len(paths)]
            statuses[path].add(client.get(path).status_code)
        assert db.engine.pool.checkedout() == 0
    assert statuses == {
        "/sync": {200},
        "/async": {200},
        "/sync-fail": {500},
        "/async-fail": {500},
        "/same-session": {200},
    }
    assert len(sessions) == 240  # /same-session records two sessions per request
    assert_all_closed(db, sessions)


# PostgreSQL only: on SQLite the endpoint's open read transaction holds the write lock (BEGIN
# IMMEDIATE) until the request ends, so the task's session would wait for it.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_sync_background_tasks_session_is_closed_after_it_too(
    db: Database,
) -> None:
    sessions: list[Session] = []
    app = FastAPI()
    app.add_middleware(DatabaseMiddleware, databases=[db])

    def after_response() -> None:
        read(db, sessions)

    @app.get("/with-task")
    def with_task(tasks: BackgroundTasks) -> dict[str, int]:
        tasks.add_task(after_response)
        return read(db, sessions)

    assert TestClient(app).get("/with-task").status_code == 200

    assert len(sessions) == 2
    assert sessions[0] is not sessions[1]  # two threads, two contexts, two sessions
    assert_all_closed(db, sessions)


def test_without_the_middleware_a_sync_endpoint_leaves_its_connection_checked_out(
    db: Database,
) -> None:
    """The control: the checks above can fail. The leaked session is closed by hand."""
    sessions: list[Session] = []
    app = FastAPI()
    add_reading_routes(app, db, sessions)
    try:
        response = TestClient(app).get("/sync")
        assert response.status_code == 200
        assert len(sessions) == 1
        assert sessions[0].in_transaction()
        assert db.engine.pool.checkedout() == 1
    finally:
        for session in sessions:
            session.close()
    assert db.engine.pool.checkedout() == 0


# -- lifespan ----------------------------------------------------------------------------------


def test_lifespan_of_a_database_disposes_its_engine_at_shutdown(db: Database) -> None:
    sessions: list[Session] = []
    with TestClient(app_with_middleware(db, sessions)) as client:
        assert client.get("/sync").status_code == 200
        pool = db.engine.pool
        assert pool.checkedin() == 1
    assert pool.checkedin() == 0
    assert db.engine.pool.checkedin() == 0
    assert db.engine.pool is not pool


def test_lifespan_of_a_container_shuts_its_resources_down(tmp_path: Path) -> None:
    container = DatabaseContainer()
    container.config.url.from_value(f"sqlite:///{tmp_path / 'container.db'}")
    database = container.database()
    app = FastAPI(lifespan=lifespan(container))
    app.add_middleware(DatabaseMiddleware, databases=[container.database])

    @app.get("/ping")
    def ping() -> int:
        return int(database.s.execute(select(1)).scalar_one())

    with TestClient(app) as client:
        assert client.get("/ping").json() == 1
        pool = database.engine.pool
        assert pool.checkedout() == 0
        assert pool.checkedin() == 1
        assert container.database.initialized
    assert not container.database.initialized
    assert pool.checkedin() == 0
    assert database.engine.pool.checkedin() == 0


# -- the session_scope dependency --------------------------------------------------------------


def test_the_session_scope_dependency_closes_the_sessions_of_its_router(db: Database) -> None:
    scoped: list[Session] = []
    unscoped: list[Session] = []
    router = APIRouter(prefix="/scoped", dependencies=[Depends(session_scope(db))])
    add_reading_routes(router, db, scoped)
    app = FastAPI()
    app.state.db = db
    app.include_router(router)
    add_reading_routes(app, db, unscoped)
    client = TestClient(app, raise_server_exceptions=False)
    try:
        assert client.get("/scoped/sync").json() == {"users": 0, "checked_out": 1}
        assert client.get("/scoped/async").status_code == 200
        assert client.get("/scoped/sync-fail").status_code == 500
        assert client.get("/scoped/same-session").json()["same"] is False
        assert_all_closed(db, scoped)

        # The routes outside the router get no scope: the sync one leaks, as without middleware.
        assert client.get("/sync").status_code == 200
        assert unscoped[0].in_transaction()
        assert db.engine.pool.checkedout() == 1
    finally:
        for session in unscoped:
            session.close()
    assert len(scoped) == 5
    assert db.engine.pool.checkedout() == 0


# -- units of work in endpoints ----------------------------------------------------------------


def app_writing_users(db: Database, sessions: list[Session]) -> FastAPI:
    uow = AppUnitOfWork(db)
    app = FastAPI()
    app.add_middleware(DatabaseMiddleware, databases=[db])

    @app.post("/sync/users")
    def create_sync(email: str) -> dict[str, int]:
        with uow:
            user = uow.users.create(email=email, name="sync")
            sessions.append(uow.session)
        return {"id": user.id}

    @app.post("/async/users")
    async def create_async(email: str) -> dict[str, int]:
        with uow:
            user = uow.users.create(email=email, name="async")
            sessions.append(uow.session)
        return {"id": user.id}

    @app.post("/sync/users-fail")
    def create_sync_then_fail(email: str) -> None:
        with uow:
            uow.users.create(email=email, name="sync")
            sessions.append(uow.session)
            raise Boom

    @app.post("/async/users-fail")
    async def create_async_then_fail(email: str) -> None:
        with uow:
            uow.users.create(email=email, name="async")
            sessions.append(uow.session)
            raise Boom

    return app


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_endpoint_writing_in_a_unit_of_work_commits(db: Database, kind: str) -> None:
    sessions: list[Session] = []
    client = TestClient(app_writing_users(db, sessions))

    response = client.post(f"/{kind}/users", params={"email": "ada@example.com"})

    assert response.status_code == 200
    assert isinstance(response.json()["id"], int)
    assert committed_emails(db) == ["ada@example.com"]
    assert_all_closed(db, sessions)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_endpoint_raising_in_a_unit_of_work_rolls_back(db: Database, kind: str) -> None:
    sessions: list[Session] = []
    client = TestClient(app_writing_users(db, sessions), raise_server_exceptions=False)

    assert client.post(f"/{kind}/users", params={"email": "ada@example.com"}).status_code == 200
    failed = client.post(f"/{kind}/users-fail", params={"email": "bob@example.com"})

    assert failed.status_code == 500
    assert len(sessions) == 2
    assert committed_emails(db) == ["ada@example.com"]
    assert_all_closed(db, sessions)


# -- dependency-injector -----------------------------------------------------------------------


class Container(containers.DeclarativeContainer):
    db = providers.Container(DatabaseContainer)
    uow = providers.Singleton(AppUnitOfWork, db.database)


# A default value, not `Annotated`: with postponed annotations `@inject` sees only strings.
INJECTED_UOW = Depends(Provide[Container.uow])


def test_an_injected_unit_of_work_uses_the_overridden_database(db: Database) -> None:
    container = Container()
    container.db.database.override(providers.Object(db))
    sessions: list[Session] = []
    app = FastAPI(lifespan=lifespan(container))
    app.add_middleware(DatabaseMiddleware, databases=[container.db.database])

    @app.post("/users")
    @inject
    def create_user(email: str, uow: AppUnitOfWork = INJECTED_UOW) -> dict[str, int | bool]:
        with uow:
            user = uow.users.create(email=email, name="Ada")
            sessions.append(uow.session)
        return {"id": user.id, "same_database": uow.database is db}

    @app.get("/users/count")
    @inject
    async def users_count(uow: AppUnitOfWork = INJECTED_UOW) -> dict[str, int | bool]:
        sessions.append(uow.database.s())
        return {"users": count_users(uow.database), "singleton": uow is container.uow()}

    container.wire(modules=[sys.modules[__name__]])
    try:
        client = TestClient(app)
        created = client.post("/users", params={"email": "ada@example.com"})
        counted = client.get("/users/count")
    finally:
        container.unwire()

    assert created.status_code == 200
    assert created.json()["same_database"] is True
    assert counted.json() == {"users": 1, "singleton": True}
    assert committed_emails(db) == ["ada@example.com"]
    assert_all_closed(db, sessions)


def test_lifespan_accepts_a_container_provider_and_rebuilds_singletons_on_the_next_start(
    tmp_path: Path,
) -> None:
    class App(containers.DeclarativeContainer):
        db = providers.Container(DatabaseContainer)
        uow = providers.Singleton(AppUnitOfWork, db.database)

    container = App()
    container.db.config.url.from_value(f"sqlite:///{tmp_path / 'life.db'}")
    app = FastAPI(lifespan=lifespan(container.db, container))
    with TestClient(app):
        first = container.uow().database
        assert first is container.db.database()
    with TestClient(app):  # a second start: the unit of work follows the new Database
        assert container.uow().database is container.db.database()
    assert container.uow().database is not first
