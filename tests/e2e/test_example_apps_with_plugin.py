"""The blog's FastAPI app tested as its users would test it: with the library's pytest plugin.

`uow_metadata` names the blog's tables (created once per session), `uow_db` wraps each test in
a transaction that is rolled back after it, the container is overridden with it, and the app
runs under FastAPI's TestClient. Every test starts from empty tables, whichever runs first: the
rows one test's requests committed are gone for the next. The database is the plugin's default,
a SQLite file in pytest's temporary directory (`--uow-database-url` or `UOW_TEST_DATABASE_URL`
would choose another).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dependency_injector import providers
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, func, select

from examples.blog.containers import Container
from examples.blog.models import Base, Post, User
from examples.blog.schemas import PostIn, UserIn
from examples.fastapi_app.main import create_app
from uow import Database


@pytest.fixture(scope="session")
def uow_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture
def client(uow_db: Database) -> Iterator[TestClient]:
    container = Container()
    container.db.database.override(providers.Object(uow_db))
    with TestClient(create_app(container)) as client:
        yield client


def rows(db: Database, model: type[Any]) -> int:
    with db.Session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize("name", ["Ada", "Bob"])
def test_each_test_starts_from_empty_tables_and_its_requests_commit(
    client: TestClient, uow_db: Database, name: str
) -> None:
    assert rows(uow_db, User) == 0  # the other run's user was rolled back
    reply = client.post("/users", json={"email": f"{name.lower()}@example.com", "name": name})
    assert reply.status_code == 201
    post = client.post(f"/users/{reply.json()['id']}/posts", json={"title": "Hello"})
    assert post.status_code == 201
    assert (rows(uow_db, User), rows(uow_db, Post)) == (1, 1)


def test_a_page_of_posts_takes_two_statements(
    client: TestClient,
    uow_db: Database,
    uow_assert_num_statements: Callable[..., Any],
) -> None:
    author = client.post("/users", json={"email": "ada@example.com", "name": "Ada"}).json()
    for number in range(5):
        client.post(f"/users/{author['id']}/posts", json={"title": f"Post {number}"})
    # Inside the test transaction each block also sends its SAVEPOINT and RELEASE.
    with uow_assert_num_statements(uow_db, 4):
        reply = client.get("/posts", params={"page": 1, "per_page": 3})
    assert reply.status_code == 200
    assert [item["author"]["name"] for item in reply.json()["items"]] == ["Ada"] * 3


def test_publishing_queues_the_welcome_only_after_the_commit(
    uow_db: Database, uow_capture_on_commit: Callable[..., Any]
) -> None:
    welcomed: list[int] = []
    container = Container()
    container.db.database.override(providers.Object(uow_db))
    container.welcome.override(providers.Object(welcomed.append))
    author, _ = container.user_service().register(UserIn(email="ada@example.com", name="Ada"))
    with uow_capture_on_commit(uow_db) as callbacks:
        post = container.post_service().publish(author.id, PostIn(title="Hello"))
    assert welcomed == []
    assert len(callbacks) == 1
    with uow_capture_on_commit(uow_db, execute=True):
        second = container.post_service().publish(author.id, PostIn(title="Again"))
    assert welcomed == [second.id]
    assert second.id != post.id
