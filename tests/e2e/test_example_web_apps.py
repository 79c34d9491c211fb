"""The blog's FastAPI and Flask apps, end to end, on SQLite and on PostgreSQL.

Each test builds a fresh `examples.blog.containers.Container`, swaps its database for a test
Database (`blog_db`) and drives one app through its framework's real test client: FastAPI's
`TestClient` (as a context manager, so the lifespan runs) or Flask's. The two apps serve the
same API, so every scenario runs on both, and one test checks that they answer it with the same
JSON. After each scenario no pooled connection may still be checked out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pytest
from dependency_injector import providers
from fastapi.testclient import TestClient
from flask.testing import FlaskClient
from sqlalchemy import func, select

from examples.blog.containers import Container
from examples.blog.models import Base, Post, User
from examples.fastapi_app.main import create_app as create_fastapi_app
from examples.flask_app.app import create_app as create_flask_app
from tests.conftest import postgres_url, reset_postgres
from uow import Database

FRAMEWORKS = ["fastapi", "flask"]
USER_KEYS = {"id", "email", "name"}
POST_KEYS = {"id", "title", "body", "author_id", "created_at"}
PAGE_KEYS = {"items", "page", "per_page", "total", "pages", "has_next", "has_prev"}


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the decoded JSON, or None when the response is not JSON


class Api(Protocol):
    def get(self, path: str, **params: int) -> Reply: ...

    def post(self, path: str, payload: dict[str, Any]) -> Reply: ...


class FastApiApi:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def get(self, path: str, **params: int) -> Reply:
        return self._reply(self.client.get(path, params=params))

    def post(self, path: str, payload: dict[str, Any]) -> Reply:
        return self._reply(self.client.post(path, json=payload))

    @staticmethod
    def _reply(response: Any) -> Reply:
        is_json = response.headers.get("content-type", "").startswith("application/json")
        return Reply(response.status_code, response.json() if is_json else None)


class FlaskApi:
    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def get(self, path: str, **params: int) -> Reply:
        response = self.client.get(path, query_string=params)
        return Reply(response.status_code, response.get_json(silent=True))

    def post(self, path: str, payload: dict[str, Any]) -> Reply:
        response = self.client.post(path, json=payload)
        return Reply(response.status_code, response.get_json(silent=True))


@pytest.fixture
def blog_db(backend: str, tmp_path: Path) -> Iterator[Database]:
    """An empty Database for the blog (the apps create its tables); dropped afterwards."""
    if backend == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'blog.db'}")
    else:
        database = Database(postgres_url())
        reset_postgres(database)
    try:
        yield database
    finally:
        database.s.remove()
        if backend == "postgresql":
            reset_postgres(database)
        database.dispose()


@contextmanager
def running_app(framework: str, database: Database) -> Iterator[Api]:
    """One app on a fresh container whose database is `database`; unwired at the end."""
    container = Container()
    container.db.database.override(providers.Object(database))
    try:
        if framework == "fastapi":
            with TestClient(create_fastapi_app(container)) as client:
                yield FastApiApi(client)
        else:
            yield FlaskApi(create_flask_app(container).test_client())
    finally:
        container.unwire()


@pytest.fixture(params=FRAMEWORKS)
def api(request: pytest.FixtureRequest, blog_db: Database) -> Iterator[Api]:
    with running_app(str(request.param), blog_db) as app_api:
        yield app_api


def count(database: Database, model: type[User] | type[Post], **where: Any) -> int:
    query = select(func.count()).select_from(model).filter_by(**where)
    with database.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def assert_no_connection_left(database: Database) -> None:
    assert database.engine.pool.checkedout() == 0


def register(api: Api, email: str, name: str = "Someone") -> dict[str, Any]:
    reply = api.post("/users", {"email": email, "name": name})
    assert reply.status == 201, reply
    return dict(reply.body)


def test_registering_creates_the_user_once_and_the_same_email_returns_the_same_user(
    api: Api, blog_db: Database
) -> None:
    first = api.post("/users", {"email": "ada@example.com", "name": "Ada"})
    assert first.status == 201
    assert set(first.body) == USER_KEYS
    assert first.body["email"] == "ada@example.com"
    assert first.body["name"] == "Ada"

    again = api.post("/users", {"email": "ada@example.com", "name": "Another Ada"})
    assert again.status == 200
    assert again.body == first.body  # same id, and the name was not overwritten
    assert count(blog_db, User) == 1
    assert_no_connection_left(blog_db)


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "not-an-email", "name": "Ada"},
        {"email": "ada@example.com", "name": ""},
        {"email": "ada@example.com"},
        {"email": "a" * 200 + "@example.com", "name": "Ada"},
    ],
    ids=["bad-email", "empty-name", "missing-name", "email-too-long"],
)
def test_invalid_registrations_are_rejected_with_422_and_write_nothing(
    api: Api, blog_db: Database, payload: dict[str, Any]
) -> None:
    reply = api.post("/users", payload)
    assert reply.status == 422
    assert isinstance(reply.body["detail"], list)
    assert count(blog_db, User) == 0
    assert_no_connection_left(blog_db)


def test_a_user_is_fetched_by_id_and_an_unknown_id_is_404(api: Api, blog_db: Database) -> None:
    ada = register(api, "ada@example.com", "Ada")
    found = api.get(f"/users/{ada['id']}")
    assert found.status == 200
    assert found.body == ada

    missing = api.get(f"/users/{ada['id'] + 1000}")
    assert missing.status == 404
    assert isinstance(missing.body["detail"], str)
    assert_no_connection_left(blog_db)


def test_users_are_listed_in_pages_of_ten_with_their_navigation(
    api: Api, blog_db: Database
) -> None:
    ids = [register(api, f"user{n:02}@example.com")["id"] for n in range(25)]
    expected = [(1, ids[:10], True, False), (2, ids[10:20], True, True), (3, ids[20:], False, True)]
    for number, page_ids, has_next, has_prev in expected:
        reply = api.get("/users", page=number, per_page=10)
        assert reply.status == 200
        assert set(reply.body) == PAGE_KEYS
        assert [item["id"] for item in reply.body["items"]] == page_ids
        assert all(set(item) == USER_KEYS for item in reply.body["items"])
        assert reply.body["page"] == number
        assert reply.body["per_page"] == 10
        assert reply.body["total"] == 25
        assert reply.body["pages"] == 3
        assert reply.body["has_next"] is has_next
        assert reply.body["has_prev"] is has_prev
    assert_no_connection_left(blog_db)


@pytest.mark.parametrize(
    "params",
    [{"per_page": 101}, {"per_page": 0}, {"page": 0}, {"page": -1}, {"page": 10**19}],
    ids=["per_page-101", "per_page-0", "page-0", "page-negative", "page-huge"],
)
def test_page_arguments_out_of_range_are_rejected_with_422(
    api: Api, blog_db: Database, params: dict[str, int]
) -> None:
    ada = register(api, "ada@example.com")
    assert api.get("/users", **params).status == 422
    assert api.get(f"/users/{ada['id']}/posts", **params).status == 422
    assert api.get("/users", per_page=100).status == 200  # the upper bound itself is allowed
    assert api.get("/users", page=1_000_000).status == 200
    assert_no_connection_left(blog_db)


def test_publishing_a_post_returns_it_with_201(api: Api, blog_db: Database) -> None:
    ada = register(api, "ada@example.com")
    reply = api.post(f"/users/{ada['id']}/posts", {"title": "Hello", "body": "First post"})
    assert reply.status == 201
    assert set(reply.body) == POST_KEYS
    assert reply.body["title"] == "Hello"
    assert reply.body["body"] == "First post"
    assert reply.body["author_id"] == ada["id"]
    assert isinstance(reply.body["created_at"], str)
    assert count(blog_db, Post, id=reply.body["id"], author_id=ada["id"]) == 1

    invalid = api.post(f"/users/{ada['id']}/posts", {"title": ""})
    assert invalid.status == 422
    assert count(blog_db, Post) == 1
    assert_no_connection_left(blog_db)


def test_publishing_for_an_unknown_author_is_404_and_writes_no_post(
    api: Api, blog_db: Database
) -> None:
    ada = register(api, "ada@example.com")
    reply = api.post(f"/users/{ada['id'] + 1000}/posts", {"title": "Lost"})
    assert reply.status == 404
    assert isinstance(reply.body["detail"], str)
    assert count(blog_db, Post) == 0
    assert_no_connection_left(blog_db)


def test_an_authors_posts_are_listed_newest_first_and_only_theirs(
    api: Api, blog_db: Database
) -> None:
    ada = register(api, "ada@example.com")
    grace = register(api, "grace@example.com")
    titles = [f"Post {n}" for n in range(5)]
    for title in titles:
        assert api.post(f"/users/{ada['id']}/posts", {"title": title}).status == 201
    assert api.post(f"/users/{grace['id']}/posts", {"title": "Grace's"}).status == 201

    first = api.get(f"/users/{ada['id']}/posts", per_page=3)
    assert first.status == 200
    assert set(first.body) == PAGE_KEYS
    assert [post["title"] for post in first.body["items"]] == titles[::-1][:3]
    assert (first.body["total"], first.body["pages"], first.body["has_next"]) == (5, 2, True)
    second = api.get(f"/users/{ada['id']}/posts", page=2, per_page=3)
    assert [post["title"] for post in second.body["items"]] == titles[::-1][3:]
    assert (second.body["has_next"], second.body["has_prev"]) == (False, True)
    assert {post["author_id"] for post in first.body["items"] + second.body["items"]} == {ada["id"]}

    nobody = api.get(f"/users/{grace['id'] + 1000}/posts")
    assert nobody.status == 200
    assert (nobody.body["items"], nobody.body["total"]) == ([], 0)
    assert_no_connection_left(blog_db)


def run_scenario(api: Api) -> list[Reply]:
    """Every endpoint once, successes and failures; created_at values are reduced to a kind."""
    ada = register(api, "ada@example.com", "Ada")
    replies = [
        api.post("/users", {"email": "ada@example.com", "name": "Ada"}),
        api.post("/users", {"email": "grace@example.com", "name": "Grace"}),
        api.get(f"/users/{ada['id']}"),
        api.get("/users/999"),
        api.get("/users", page=1, per_page=1),
        api.post(f"/users/{ada['id']}/posts", {"title": "One", "body": "1"}),
        api.post(f"/users/{ada['id']}/posts", {"title": "Two"}),
        api.post("/users/999/posts", {"title": "Lost"}),
        api.get(f"/users/{ada['id']}/posts", per_page=1),
    ]
    return [Reply(reply.status, with_timestamp_kinds(reply.body)) for reply in replies]


def with_timestamp_kinds(body: Any) -> Any:
    """`body` with each created_at replaced by its kind (which must be an ISO timestamp)."""
    if isinstance(body, str):
        moment = datetime.fromisoformat(body)
        return "<naive timestamp>" if moment.tzinfo is None else "<aware timestamp>"
    if isinstance(body, list):
        return [with_timestamp_kinds(item) for item in body]
    if isinstance(body, dict):
        return {
            key: with_timestamp_kinds(value) if key in ("created_at", "items") else value
            for key, value in body.items()
        }
    return body


def test_both_apps_answer_the_same_scenario_with_the_same_json(blog_db: Database) -> None:
    answers: dict[str, list[Reply]] = {}
    for framework in FRAMEWORKS:
        with running_app(framework, blog_db) as app_api:
            answers[framework] = run_scenario(app_api)
        assert_no_connection_left(blog_db)
        # Dropping the tables (and on PostgreSQL their id sequences) lets the next app, which
        # creates them again, hand out the same ids, so the bodies compare whole.
        blog_db.drop_all(Base.metadata)
    statuses = [reply.status for reply in answers["fastapi"]]
    assert statuses == [200, 201, 200, 404, 200, 201, 201, 404, 200]
    assert answers["fastapi"] == answers["flask"]


def test_leaving_the_fastapi_test_client_shuts_the_containers_database_down(
    tmp_path: Path,
) -> None:
    container = Container()  # no override: the DatabaseContainer builds the Database
    container.db.config.url.from_value(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with TestClient(create_fastapi_app(container)) as client:
            assert client.post("/users", json={"email": "a@b.c", "name": "A"}).status_code == 201
            assert container.db.database.initialized is True
            database = container.db.database()
            assert database.url.database == str(tmp_path / "x.db")
        assert container.db.database.initialized is False
    finally:
        container.unwire()


def test_a_posts_time_reads_back_as_the_same_instant_whatever_the_session_time_zone(
    backend: str, blog_db: Database
) -> None:
    # A session time zone far from UTC: a naive timestamp column would shift the instant.
    database = blog_db
    if backend == "postgresql":
        options = {"connect_args": {"options": "-c timezone=America/New_York"}}
        database = Database(postgres_url(), engine_options=options)
    try:
        for framework in FRAMEWORKS:
            with running_app(framework, database) as api:
                author = register(api, f"{framework}@example.com")
                published = api.post(f"/users/{author['id']}/posts", {"title": "Hi"}).body
                listed = api.get(f"/users/{author['id']}/posts").body["items"][0]
            at_publish = datetime.fromisoformat(published["created_at"])
            at_listing = datetime.fromisoformat(listed["created_at"])
            assert at_listing.tzinfo is not None
            assert at_listing == at_publish
    finally:
        if database is not blog_db:
            database.dispose()


@pytest.mark.parametrize("query", ["page=abc", "per_page=x"])
def test_a_non_numeric_page_argument_is_rejected_with_a_json_422(api: Api, query: str) -> None:
    name, value = query.split("=")
    reply = api.get("/users", **{name: value})  # type: ignore[arg-type]
    assert reply.status == 422
    assert isinstance(reply.body, dict)
    assert "detail" in reply.body
