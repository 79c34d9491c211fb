"""The blog example's feed: a page of posts with their authors nested, without N+1.

`PostDetail` nests the author, so validating a page of posts reads `post.author` for each: a
new user's first version of the feed sent the page, its count and one SELECT per post (12 for
ten posts by ten authors). `PostRepository.recent` loads the authors with the posts
(`select_related("author")`): two statements, counted by SQLAlchemy and, on PostgreSQL, in the
server's own log, through the service and through the FastAPI app.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dependency_injector import providers
from fastapi.testclient import TestClient

from examples.blog import models as blog_models
from examples.blog.containers import Container
from examples.blog.repositories import BlogUnitOfWork
from examples.blog.schemas import PostDetail
from examples.blog.services import PostService
from examples.fastapi_app.main import create_app
from tests.conftest import make_database, reset_postgres
from tests.server_log import server_statements, wire_database
from uow import Database
from uow.testing import count_statements


@pytest.fixture
def feed(backend: str, tmp_path: Path) -> Iterator[tuple[Database, str | None]]:
    """The blog example's tables: ten authors with one post each; on PostgreSQL, the
    application name its statements carry in the server's log."""
    name = None
    if backend == "postgresql":
        database, name = wire_database()
        reset_postgres(database)
    else:
        database = make_database(backend, tmp_path)
    database.create_all(blog_models.Base.metadata)
    with BlogUnitOfWork(database) as uow:
        authors = uow.users.bulk_create(
            [{"email": f"a{n}@example.com", "name": f"Author {n}"} for n in range(10)]
        )
        uow.posts.bulk_create([{"title": f"By {a.name}", "author_id": a.id} for a in authors])
    yield database, name
    database.s.remove()
    if backend == "postgresql":
        reset_postgres(database)
    database.dispose()


def test_a_feed_page_mapped_to_nested_schemas_without_eager_loading_costs_a_select_per_post(
    feed: tuple[Database, str | None],
) -> None:
    # What a new user wrote first: PostDetail nests the author, and validating it lazy-loads
    # each post's author: the page, its count, and ten SELECTs.
    database, _ = feed
    uow = BlogUnitOfWork(database)
    with count_statements(database.engine) as log, uow:
        query = uow.posts.query().order_by("-created_at", "-id")
        page = query.paginate(1, 10).map(PostDetail)
    assert log.count == 12
    assert len({post.author.email for post in page.items}) == 10


def test_the_feed_service_reads_a_page_with_its_authors_in_two_statements(
    feed: tuple[Database, str | None],
) -> None:
    database, name = feed
    service = PostService(BlogUnitOfWork(database))
    with count_statements(database.engine) as log:
        page = service.recent(1, 10)
    assert log.count == 2  # the page, joined with its authors; the count
    assert [post.title for post in page.items] == [f"By Author {n}" for n in range(9, -1, -1)]
    assert page.items[0].author.email == "a9@example.com"
    assert page.total == 10
    if name is not None:  # and on the wire: no BEGIN, no COMMIT, no lazy loads
        with server_statements(name) as sent:
            service.recent(2, 4)
        assert [statement.split()[0] for statement in sent] == ["SELECT", "SELECT"]


def test_the_fastapi_feed_endpoint_answers_with_two_statements(
    feed: tuple[Database, str | None],
) -> None:
    database, _ = feed
    container = Container()
    container.db.database.override(providers.Object(database))
    try:
        with TestClient(create_app(container)) as client:
            with count_statements(database.engine) as log:
                reply = client.get("/posts", params={"per_page": 10})
    finally:
        container.unwire()
    assert reply.status_code == 200
    body = reply.json()
    assert log.count == 2
    assert body["total"] == 10
    assert len(body["items"]) == 10
    assert body["items"][0]["author"] == {"id": 10, "email": "a9@example.com", "name": "Author 9"}
