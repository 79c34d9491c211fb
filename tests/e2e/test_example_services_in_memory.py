"""The blog example's services, unit-tested in memory: their own unit of work and repositories
(custom methods included) over `InMemoryDatabase`, through the container as the apps build them,
with no database at all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dependency_injector import providers

from examples.blog.async_repositories import AsyncBlogUnitOfWork
from examples.blog.async_services import AsyncPostService, AsyncUserService
from examples.blog.containers import Container
from examples.blog.models import Post
from examples.blog.schemas import PostIn, UserIn
from examples.blog.services import PostService, UserService
from repositories import DoesNotExist
from uow.testing import AsyncInMemoryDatabase, InMemoryDatabase


@pytest.fixture
def welcomed() -> list[int]:
    """The ids the services asked to welcome (the container's `welcome` job)."""
    return []


@pytest.fixture
def container(welcomed: list[int]) -> Iterator[Container]:
    """The app's container, its database an InMemoryDatabase."""
    container = Container()
    container.db.database.override(providers.Object(InMemoryDatabase()))
    container.welcome.override(providers.Object(welcomed.append))
    yield container
    container.unwire()


def test_register_creates_once(container: Container) -> None:
    users: UserService = container.user_service()
    ada, created = users.register(UserIn(email="ada@example.com", name="Ada"))
    assert (ada.id, ada.name, created) == (1, "Ada", True)
    again, created = users.register(UserIn(email="ada@example.com", name="Other"))
    assert (again, created) == (ada, False)
    assert users.get(ada.id) == ada
    with pytest.raises(DoesNotExist):
        users.get(99)
    users.register(UserIn(email="bob@example.com", name="Bob"))
    page = users.list(1, 1)
    assert ([u.name for u in page.items], page.total, page.has_next) == (["Ada"], 2, True)


def test_publish_welcomes_after_the_commit_only(container: Container, welcomed: list[int]) -> None:
    users: UserService = container.user_service()
    posts: PostService = container.post_service()
    ada, _ = users.register(UserIn(email="ada@example.com", name="Ada"))
    post = posts.publish(ada.id, PostIn(title="Hello", body="First"))
    assert (post.id, post.title, post.author_id, post.created_at.tzinfo is not None) == (
        1,
        "Hello",
        ada.id,
        True,
    )
    assert welcomed == [post.id]
    with pytest.raises(DoesNotExist):
        posts.publish(99, PostIn(title="Nobody's"))
    assert welcomed == [post.id]
    assert posts.by_author(99, 1, 10).total == 0


def test_feeds_and_marking(container: Container) -> None:
    users: UserService = container.user_service()
    posts: PostService = container.post_service()
    ada, _ = users.register(UserIn(email="ada@example.com", name="Ada"))
    bob, _ = users.register(UserIn(email="bob@example.com", name="Bob"))
    for title, author in [("One", ada), ("Two", bob), ("Three", ada)]:
        posts.publish(author.id, PostIn(title=title))
    mine = posts.by_author(ada.id, 1, 10)
    assert [p.title for p in mine.items] == ["Three", "One"]  # newest first
    feed = posts.recent(1, 2)
    assert [(p.title, p.author.name) for p in feed.items] == [("Three", "Ada"), ("Two", "Bob")]
    assert (feed.total, feed.has_next) == (3, True)
    assert posts.mark_welcomed(1) is True
    assert posts.mark_welcomed(99) is False
    database = container.db.database()
    assert isinstance(database, InMemoryDatabase)
    assert [post.welcomed for post in database.rows(Post)] == [True, False, False]


async def test_the_async_services_in_memory() -> None:
    uow = AsyncBlogUnitOfWork(AsyncInMemoryDatabase())
    users, posts = AsyncUserService(uow), AsyncPostService(uow)
    ada, created = await users.register(UserIn(email="ada@example.com", name="Ada"))
    assert created
    first = await posts.publish(ada.id, PostIn(title="One"))
    await posts.publish(ada.id, PostIn(title="Two"))
    profile = await users.profile(ada.id)
    assert [p.title for p in profile.posts] == ["One", "Two"]
    detail = await posts.get(first.id)
    assert (detail.title, detail.author.email) == ("One", "ada@example.com")
    feed = await posts.recent(1, 10)
    assert [p.title for p in feed.items] == ["Two", "One"]
    with pytest.raises(DoesNotExist):
        await users.profile(99)
    with pytest.raises(DoesNotExist):
        await posts.publish(99, PostIn(title="Nobody's"))
    assert (await users.list(1, 10)).total == 1
