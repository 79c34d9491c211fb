"""The blog's async FastAPI app (`examples/fastapi_async_app`), end to end, on SQLite (aiosqlite)
and PostgreSQL (asyncpg).

As for the sync apps (test_example_web_apps.py), each test builds a fresh container and drives
the app through FastAPI's real `TestClient`, as a context manager, so the lifespan runs and the
app keeps one event loop for its whole life (async connections belong to the loop that opened
them). The container reads its URL from `config` here, so it builds the AsyncDatabase itself and
its lifespan disposes it; one test overrides it with a test AsyncDatabase instead. The app
answers the sync app's API with the same JSON; its nested responses load their related objects
with the query, in a fixed number of statements. After each request no pooled connection may
still be checked out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from examples.blog.async_containers import AsyncContainer
from examples.blog.containers import Container
from examples.blog.models import Base, Post, User
from examples.fastapi_app.main import create_app as create_sync_app
from examples.fastapi_async_app.main import create_app
from tests.conftest import postgres_url, reset_postgres
from tests.e2e.test_example_web_apps import (
    PAGE_KEYS,
    POST_KEYS,
    USER_KEYS,
    FastApiApi,
    Reply,
    run_scenario,
    with_timestamp_kinds,
)
from uow import AsyncDatabase, Database

# A leaked connection exhausts the pool: a request then fails in seconds, not after 30.
POOL_TIMEOUT = 3


@dataclass
class Running:
    """An app being served: its client, its API and its container's AsyncDatabase."""

    client: TestClient
    api: FastApiApi
    adb: AsyncDatabase

    def get(self, path: str, **params: int) -> Reply:
        reply = self.api.get(path, **params)
        assert self.adb.engine.pool.checkedout() == 0  # the request's sessions were closed
        return reply

    def post(self, path: str, payload: dict[str, Any]) -> Reply:
        reply = self.api.post(path, payload)
        assert self.adb.engine.pool.checkedout() == 0
        return reply

    def register(self, email: str, name: str = "Someone") -> dict[str, Any]:
        reply = self.post("/users", {"email": email, "name": name})
        assert reply.status == 201, reply
        return dict(reply.body)


@pytest.fixture
def blog_db(backend: str, tmp_path: Path) -> Iterator[Database]:
    """An empty database for the blog (the app creates its tables), read here through a sync
    Database; dropped afterwards."""
    if backend == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'blog.db'}")
    else:
        database = Database(postgres_url())
        reset_postgres(database)
    try:
        yield database
    finally:
        if backend == "postgresql":
            reset_postgres(database)
        database.dispose()


def async_url(database: Database) -> str:
    url = database.url.render_as_string(hide_password=False)
    return url.replace("postgresql+psycopg://", "postgresql+asyncpg://")  # sqlite:// stays


@contextmanager
def running_app(database: Database, container: AsyncContainer | None = None) -> Iterator[Running]:
    """The app on a fresh container configured with `database`'s URL; unwired at the end."""
    if container is None:
        container = AsyncContainer()
        container.db.config.from_dict({"url": async_url(database), "pool_timeout": POOL_TIMEOUT})
    try:
        with TestClient(create_app(container)) as client:
            adb = client.portal.call(container.db.container.async_database.async_)
            yield Running(client, FastApiApi(client), adb)
    finally:
        container.unwire()


@pytest.fixture
def app(blog_db: Database) -> Iterator[Running]:
    with running_app(blog_db) as running:
        yield running


def count(database: Database, model: type[User] | type[Post], **where: Any) -> int:
    query = select(func.count()).select_from(model).filter_by(**where)
    with database.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


@contextmanager
def selects(adb: AsyncDatabase) -> Iterator[list[str]]:
    """The SELECT statements `adb` sends inside the block."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append(statement)

    event.listen(adb.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(adb.engine.sync_engine, "before_cursor_execute", record)


# -- the sync app's API ------------------------------------------------------------------------


def scenario(api: FastApiApi) -> list[Reply]:
    """The sync apps' scenario, then the feed, whose posts nest their authors."""
    replies = run_scenario(api)
    feed = api.get("/posts", per_page=2)
    return [*replies, Reply(feed.status, with_timestamp_kinds(feed.body))]


def test_it_answers_the_sync_apps_scenario_with_the_same_json(blog_db: Database) -> None:
    with running_app(blog_db) as app:
        answered = scenario(app.api)
    blog_db.drop_all(Base.metadata)  # the sync app then hands out the same ids
    sync_container = Container()
    sync_container.db.database.override(providers.Object(blog_db))
    try:
        with TestClient(create_sync_app(sync_container)) as client:
            expected = scenario(FastApiApi(client))
    finally:
        sync_container.unwire()
    statuses = [reply.status for reply in answered]
    assert statuses == [200, 201, 200, 404, 200, 201, 201, 404, 200, 200]
    assert [post["title"] for post in answered[-1].body["items"]] == ["Two", "One"]
    assert answered == expected


def test_registering_creates_the_user_once_and_the_same_email_returns_the_same_user(
    app: Running, blog_db: Database
) -> None:
    first = app.post("/users", {"email": "ada@example.com", "name": "Ada"})
    assert first.status == 201
    assert set(first.body) == USER_KEYS
    again = app.post("/users", {"email": "ada@example.com", "name": "Another Ada"})
    assert again.status == 200
    assert again.body == first.body  # get-or-create: same id, the name not overwritten
    assert count(blog_db, User) == 1


@pytest.mark.parametrize(
    "payload",
    [{"email": "not-an-email", "name": "Ada"}, {"email": "ada@example.com"}],
    ids=["bad-email", "missing-name"],
)
def test_invalid_registrations_are_rejected_with_422_and_write_nothing(
    app: Running, blog_db: Database, payload: dict[str, Any]
) -> None:
    reply = app.post("/users", payload)
    assert reply.status == 422
    assert isinstance(reply.body["detail"], list)
    assert count(blog_db, User) == 0


def test_a_user_is_fetched_by_id_and_an_unknown_id_is_404(app: Running) -> None:
    ada = app.register("ada@example.com", "Ada")
    assert app.get(f"/users/{ada['id']}") == Reply(200, ada)
    missing = app.get(f"/users/{ada['id'] + 1000}")
    assert missing.status == 404
    assert missing.body == {"detail": "no User matches the lookups"}  # DoesNotExist's message


def test_users_are_listed_in_pages_with_their_navigation(app: Running) -> None:
    ids = [app.register(f"user{n:02}@example.com")["id"] for n in range(25)]
    for number, page_ids, has_next in [(1, ids[:10], True), (3, ids[20:], False)]:
        reply = app.get("/users", page=number, per_page=10)
        assert reply.status == 200
        assert set(reply.body) == PAGE_KEYS
        assert [item["id"] for item in reply.body["items"]] == page_ids
        assert (reply.body["total"], reply.body["pages"]) == (25, 3)
        assert reply.body["has_next"] is has_next
    assert app.get("/users", per_page=101).status == 422
    assert app.get("/posts", page=0).status == 422


def test_an_authors_posts_are_published_and_listed_newest_first(
    app: Running, blog_db: Database
) -> None:
    ada = app.register("ada@example.com")
    titles = [f"Post {n}" for n in range(5)]
    for title in titles:
        reply = app.post(f"/users/{ada['id']}/posts", {"title": title})
        assert reply.status == 201
        assert set(reply.body) == POST_KEYS
    assert app.post(f"/users/{ada['id'] + 1000}/posts", {"title": "Lost"}).status == 404
    assert count(blog_db, Post) == 5

    first = app.get(f"/users/{ada['id']}/posts", per_page=3)
    assert [post["title"] for post in first.body["items"]] == titles[::-1][:3]
    assert (first.body["total"], first.body["has_next"]) == (5, True)
    second = app.get(f"/users/{ada['id']}/posts", page=2, per_page=3)
    assert [post["title"] for post in second.body["items"]] == titles[::-1][3:]


# -- nested responses: loaded with the query ---------------------------------------------------


def test_the_feed_nests_each_posts_author_in_the_same_two_statements_for_any_page(
    app: Running,
) -> None:
    authors = [app.register(f"author{n}@example.com", f"Author {n}") for n in range(3)]
    for n in range(9):
        author = authors[n % 3]
        assert app.post(f"/users/{author['id']}/posts", {"title": f"P{n}"}).status == 201

    with selects(app.adb) as small:
        one = app.get("/posts", per_page=1)
    with selects(app.adb) as large:
        page = app.get("/posts", per_page=9)

    assert page.status == 200
    assert [post["title"] for post in page.body["items"]] == [f"P{n}" for n in range(8, -1, -1)]
    by_id = {author["id"]: author for author in authors}
    for post in page.body["items"]:
        assert set(post) == POST_KEYS | {"author"}
        assert post["author"] == by_id[post["author_id"]]
    assert one.body["items"] == page.body["items"][:1]
    assert len(small) == len(large) == 2  # COUNT, then one SELECT joining the authors


def test_a_post_is_fetched_with_its_author_and_an_unknown_post_is_404(app: Running) -> None:
    ada = app.register("ada@example.com", "Ada")
    post = app.post(f"/users/{ada['id']}/posts", {"title": "Hello"}).body
    fetched = app.get(f"/posts/{post['id']}")
    assert fetched == Reply(200, {**post, "author": ada})
    assert app.get(f"/posts/{post['id'] + 1000}").status == 404


def test_a_profile_nests_all_the_users_posts_in_two_statements(app: Running) -> None:
    ada = app.register("ada@example.com", "Ada")
    grace = app.register("grace@example.com", "Grace")
    published = [
        app.post(f"/users/{ada['id']}/posts", {"title": f"Ada {n}"}).body for n in range(4)
    ]
    app.post(f"/users/{grace['id']}/posts", {"title": "Grace's"})

    with selects(app.adb) as sent:
        profile = app.get(f"/users/{ada['id']}/profile")

    assert profile.status == 200
    assert {key: profile.body[key] for key in USER_KEYS} == ada
    assert sorted(profile.body["posts"], key=lambda post: post["id"]) == published
    assert len(sent) == 2  # the user, then its posts (WHERE author_id IN ...)
    assert app.get(f"/users/{grace['id']}/profile").body["posts"][0]["title"] == "Grace's"
    assert app.get(f"/users/{ada['id'] + 1000}/profile").status == 404


# -- the container and the lifespan ------------------------------------------------------------


def test_leaving_the_client_disposes_the_containers_async_database(blog_db: Database) -> None:
    container = AsyncContainer()
    container.db.config.url.from_value(async_url(blog_db))
    with running_app(blog_db, container) as app:
        app.register("ada@example.com")
        assert container.db.async_database.initialized is True
        pool = app.adb.engine.pool
        assert pool.checkedin() >= 1
    assert container.db.async_database.initialized is False
    assert pool.checkedin() == 0  # closed, on the app's loop, by the lifespan
    assert count(blog_db, User) == 1


def test_an_overriding_async_database_serves_the_app_and_is_left_to_its_owner(
    blog_db: Database, tmp_path: Path
) -> None:
    test_adb = AsyncDatabase(async_url(blog_db), engine_options={"pool_timeout": POOL_TIMEOUT})
    container = AsyncContainer()
    container.db.config.url.from_value(f"sqlite:///{tmp_path / 'never-used.db'}")
    container.db.async_database.override(providers.Object(test_adb))
    with running_app(blog_db, container) as app:
        assert app.adb is test_adb
        app.register("ada@example.com")
        assert test_adb.engine.pool.checkedin() >= 1
        app.client.portal.call(test_adb.dispose)  # its owner disposes it, on the app's loop
    assert test_adb.engine.pool.checkedin() == 0
    assert not (tmp_path / "never-used.db").exists()
    assert count(blog_db, User) == 1
