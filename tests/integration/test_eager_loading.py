"""Eager loading: `select_related`, `prefetch_related` and `options` on queries, sync and async.

The statement counts are the point: `select_related("author")` is one SELECT (a JOIN),
`prefetch_related("posts")` one more SELECT per relationship, whatever the number of rows, and
no attribute touched afterwards sends anything. They are counted twice: by SQLAlchemy
(`uow.testing.count_statements`, both databases) and on the wire (PostgreSQL's own log). In
async code an attribute that is not loaded raises `LazyLoadError` at once instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, event, inspect
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    WriteOnlyMapped,
    joinedload,
    mapped_column,
    relationship,
    selectinload,
)

from repositories import AsyncRepository, FieldError, Query, Repository
from tests.conftest import make_database, postgres_url, reset_postgres
from tests.server_log import server_statements, wire_database
from uow import AsyncDatabase, AsyncUnitOfWork, Database, LazyLoadError, UnitOfWork
from uow.testing import count_statements


class Base(DeclarativeBase):
    pass


class Publisher(Base):
    __tablename__ = "publishers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # A query, never a loaded collection: nothing to load eagerly.
    authors: WriteOnlyMapped[User] = relationship(viewonly=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    publisher_id: Mapped[int | None] = mapped_column(ForeignKey("publishers.id"))
    publisher: Mapped[Publisher | None] = relationship()
    posts: Mapped[list[Post]] = relationship(back_populates="author", order_by="Post.id")
    profile: Mapped[Profile | None] = relationship(back_populates="user")


class Profile(Base):
    """One-to-one with User (the foreign key is unique)."""

    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    bio: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    user: Mapped[User] = relationship(back_populates="profile")


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")
    comments: Mapped[list[Comment]] = relationship(back_populates="post", order_by="Comment.id")


class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(200))
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    post: Mapped[Post] = relationship(back_populates="comments")


class Blog(UnitOfWork):
    users: Repository[User]
    posts: Repository[Post]


class AsyncBlog(AsyncUnitOfWork):
    users: AsyncRepository[User]
    posts: AsyncRepository[Post]


USERS = 6  # the last one has no publisher and no profile
POSTS_PER_USER = 2
COMMENTS_PER_POST = 2


def seed(db: Database) -> None:
    """Two publishers; six users, each with two posts of two comments."""
    with db.Session() as session, session.begin():
        publishers = [Publisher(name=f"Press {n}") for n in range(2)]
        for n in range(USERS):
            user = User(email=f"u{n}@example.com", name=f"User {n}")
            if n < USERS - 1:
                user.publisher = publishers[n % 2]
                user.profile = Profile(bio=f"Bio {n}")
            for p in range(POSTS_PER_USER):
                post = Post(title=f"Post {n}.{p}", author=user)
                post.comments = [Comment(body=f"{n}.{p}.{c}") for c in range(COMMENTS_PER_POST)]
            session.add(user)


def prepared(db: Database, backend: str) -> Database:
    if backend == "postgresql":
        reset_postgres(db)
    db.create_all(Base.metadata)
    seed(db)
    return db


def clean_up(db: Database, backend: str) -> None:
    db.s.remove()
    if backend == "postgresql":
        reset_postgres(db)
    db.dispose()


@pytest.fixture
def db(backend: str, tmp_path: Path) -> Iterator[Database]:
    database = prepared(make_database(backend, tmp_path), backend)
    yield database
    clean_up(database, backend)


@pytest.fixture
def blog(db: Database) -> Blog:
    return Blog(db)


def loaded(obj: Any, name: str) -> bool:
    """Whether `obj.name` is loaded (reading it would run no SQL)."""
    return name not in inspect(obj).unloaded


# -- select_related ------------------------------------------------------------------------------


def test_select_related_loads_the_author_in_the_same_statement(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        posts = blog.posts.filter(title__startswith="Post").select_related("author").all()
        authors = {post.author.email for post in posts}
    assert log.count == 1
    assert " JOIN users" in log.statements[0]
    assert len(posts) == USERS * POSTS_PER_USER
    assert len(authors) == USERS


def test_select_related_follows_a_chain_and_keeps_rows_whose_key_is_null(
    db: Database, blog: Blog
) -> None:
    with count_statements(db.engine) as log, blog:
        posts = blog.posts.filter().select_related("author__publisher").all()
        publishers = [post.author.publisher and post.author.publisher.name for post in posts]
    assert log.count == 1
    assert len(posts) == USERS * POSTS_PER_USER  # the users without a publisher are kept
    assert publishers.count(None) == POSTS_PER_USER
    assert {"Press 0", "Press 1"} <= set(publishers)


def test_select_related_follows_a_one_to_one_from_either_side(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        users = blog.users.filter().select_related("profile", "publisher").all()
        bios = [user.profile.bio if user.profile else None for user in users]
        [user.publisher for user in users]
    assert log.count == 1
    assert bios.count(None) == 1


def test_select_related_on_a_collection_says_to_use_prefetch_related(blog: Blog) -> None:
    with blog, pytest.raises(FieldError) as caught:
        blog.users.filter().select_related("posts")
    assert "User.posts is a collection" in str(caught.value)
    assert 'prefetch_related("posts")' in str(caught.value)
    with blog, pytest.raises(FieldError) as caught:
        blog.users.filter().select_related("profile__user__posts")
    assert "User.posts is a collection (reached through 'profile__user__posts')" in str(
        caught.value
    )


# -- prefetch_related ----------------------------------------------------------------------------


def test_prefetch_related_loads_a_collection_with_one_more_statement(
    db: Database, blog: Blog
) -> None:
    with count_statements(db.engine) as log, blog:
        users = blog.users.filter().prefetch_related("posts").all()
        titles = [post.title for user in users for post in user.posts]
    assert log.count == 2
    assert len(titles) == USERS * POSTS_PER_USER
    assert [post.title for post in users[0].posts] == ["Post 0.0", "Post 0.1"]


def test_a_prefetch_chain_takes_one_statement_per_step(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        users = blog.users.filter().prefetch_related("posts__comments").all()
        bodies = [c.body for user in users for post in user.posts for c in post.comments]
    assert log.count == 3
    assert len(bodies) == USERS * POSTS_PER_USER * COMMENTS_PER_POST


def test_prefetch_through_a_joined_step_reuses_the_join(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        query = blog.posts.filter(title="Post 1.0").select_related("author")
        [post] = query.prefetch_related("author__posts").all()
        titles = [other.title for other in post.author.posts]
    assert log.count == 2  # posts JOIN users, then the author's posts
    assert titles == ["Post 1.0", "Post 1.1"]


def test_calls_add_up_and_none_forgets_them(db: Database, blog: Blog) -> None:
    def both() -> Query[User]:
        query = blog.users.filter(email="u0@example.com").prefetch_related("posts")
        return query.prefetch_related("profile").select_related("publisher")

    with blog:
        [user] = both().all()
        assert all(loaded(user, name) for name in ("posts", "profile", "publisher"))
    with blog:
        [user] = both().prefetch_related(None).all()
        assert loaded(user, "publisher")
        assert not loaded(user, "posts")
        assert not loaded(user, "profile")
    with blog:
        [user] = both().select_related(None).all()
        assert loaded(user, "posts")
        assert not loaded(user, "publisher")


def test_the_same_name_twice_loads_once(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        query = blog.users.filter().prefetch_related("posts", "posts").prefetch_related("posts")
        [user.posts for user in query.all()]
    assert log.count == 2


# -- names are checked before any SQL ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "name", "message"),
    [
        ("prefetch_related", "postz", "User has no relationship 'postz'"),
        ("select_related", "email", "User.email is a column, not a relationship"),
        ("prefetch_related", "posts__authr", "Post has no relationship 'authr'"),
    ],
)
def test_a_bad_name_raises_field_error_naming_it_and_the_relationships(
    db: Database, blog: Blog, method: str, name: str, message: str
) -> None:
    with count_statements(db.engine) as log, blog:
        query = blog.users.filter(email="u0@example.com")
        with pytest.raises(FieldError) as caught:
            getattr(query, method)(name)
        assert blog.users.exists(email="u0@example.com")  # the block goes on
    text = str(caught.value)
    assert message in text
    assert f"{method}()" in text
    if "__" in name:
        assert "reached through 'posts__authr'" in text
        assert "Post's are: author, comments" in text
    else:
        assert "User's are: posts, profile, publisher" in text
    assert log.count == 1  # only the exists()


def test_arguments_that_are_not_names_or_options_raise_type_error(db: Database) -> None:
    with db.Session() as session:  # building a query needs no block, and runs no SQL
        query = Query(session, User)
        with pytest.raises(TypeError, match=r"select_related\(\) takes the relationships"):
            query.select_related()
        with pytest.raises(TypeError, match=r"pass loader options to options\(\)"):
            query.prefetch_related(User.posts)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"prefetch_related\('posts'\)"):
            query.options("posts")  # type: ignore[arg-type]
        with pytest.raises(FieldError, match=r"starts from Post, but this query loads User"):
            query.options(selectinload(Post.author))
        with pytest.raises(FieldError, match=r"Publisher.authors is a write_only relationship"):
            Query(session, Publisher).prefetch_related("authors")


# -- raw options ---------------------------------------------------------------------------------


def test_options_take_sqlalchemy_loader_options(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        users = blog.users.filter(email__in=["u0@example.com", "u1@example.com"]).options(
            selectinload(User.posts).selectinload(Post.comments)
        )
        comments = [c for user in users.all() for post in user.posts for c in post.comments]
    assert log.count == 3
    assert len(comments) == 2 * POSTS_PER_USER * COMMENTS_PER_POST


def test_a_collection_joined_by_an_option_comes_whole_from_every_terminal(
    db: Database, blog: Blog
) -> None:
    with count_statements(db.engine) as log, blog:
        query = blog.users.filter(name__startswith="User").options(joinedload(User.posts))
        everyone = query.all()
        first = query.order_by("email").first()
        one = query.filter(email="u2@example.com").one()
        page = query.paginate(1, 2)
    assert log.count == 5  # all, first, one, the page and its count: one statement each
    assert len(everyone) == USERS  # one object per user, not one per post
    for user in [*everyone, first, one, *page.items]:
        assert user is not None
        assert len(user.posts) == POSTS_PER_USER
    assert page.total == USERS


def test_template_values_stay_right_around_raw_options(blog: Blog) -> None:
    with blog:
        query = blog.users.filter(email="u3@example.com").options(selectinload(User.posts))
        [user] = query.filter(name="User 3").all()
        assert [post.title for post in user.posts] == ["Post 3.0", "Post 3.1"]
        assert query.filter(name="User 4").all() == []


# -- kept statements -----------------------------------------------------------------------------


def test_kept_statements_never_mix_queries_with_different_loads(db: Database, blog: Blog) -> None:
    executed: list[Any] = []
    event.listen(db.engine, "before_execute", lambda _c, clause, *_: executed.append(clause))
    counts = []
    for loads in [(), ("posts",), (), ("posts",), ("profile",)]:
        with count_statements(db.engine) as log, blog:
            user = blog.users.filter(email="u1@example.com").prefetch_related(*loads).first()
            assert user is not None
            assert loaded(user, "posts") is ("posts" in loads)
            assert loaded(user, "profile") is ("profile" in loads)
        counts.append(log.count)
    assert counts == [1, 2, 1, 2, 2]
    firsts = [clause for clause in executed if "users.email" in str(clause)]
    assert firsts[0] is firsts[2]  # the plain query's statement, kept and reused
    assert firsts[1] is firsts[3]  # the prefetching one's, kept apart from it
    assert len({id(clause) for clause in firsts}) == 3


# -- paginate, slicing, count, exists, update, delete --------------------------------------------


def test_paginate_counts_without_the_eager_loads(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        query = blog.posts.query().select_related("author").prefetch_related("comments")
        page = query.order_by("id").paginate(2, 4)
        [(post.author.name, [c.body for c in post.comments]) for post in page.items]
    assert log.count == 3  # the page (with its JOIN), the comments, the count
    counts = log.matching("SELECT count")
    assert len(counts) == 1
    assert "JOIN" not in counts[0]
    assert "comments" not in counts[0]
    assert [post.title for post in page.items] == ["Post 2.0", "Post 2.1", "Post 3.0", "Post 3.1"]
    assert (page.total, page.has_next) == (USERS * POSTS_PER_USER, True)

    with count_statements(db.engine) as log, blog:
        users = blog.users.query().select_related("publisher").paginate(1, 4)
        [user.publisher for user in users.items]
    assert log.count == 2


def test_slices_first_one_and_an_index_load_eagerly(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        query = blog.users.query().order_by("id").prefetch_related("posts")
        sliced = query[1:3].all()
        first = query.first()
        one = query.filter(email="u4@example.com").one()
        fifth = query[5]
        loaded_users = [*sliced, first, one, fifth]
        titles = [[post.title for post in user.posts] for user in loaded_users if user]
    assert log.count == 8  # four reads, each with its one prefetch
    assert titles[0] == ["Post 1.0", "Post 1.1"]
    assert titles[-1] == ["Post 5.0", "Post 5.1"]
    with blog:
        assert blog.users.filter().prefetch_related("posts")[1:3].count() == 2


def test_count_exists_update_and_delete_ignore_the_loads(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        query = blog.posts.filter(title__startswith="Post 0").select_related("author")
        query = query.prefetch_related("comments")
        assert query.count() == POSTS_PER_USER
        assert query.exists()
        assert query.update(title="Renamed") == POSTS_PER_USER
        assert blog.posts.filter(title="Renamed").prefetch_related("comments").count() == 2
    reads = [s for s in log.statements if s.lstrip().upper().startswith(("SELECT", "UPDATE"))]
    assert not any("JOIN" in s or "comments" in s for s in reads)


def test_select_for_update_locks_the_querys_own_rows(
    backend: str, db: Database, blog: Blog
) -> None:
    with count_statements(db.engine) as log, blog:
        [post] = (
            blog.posts.filter(title="Post 0.0")
            .select_related("author__publisher")
            .select_for_update()
            .all()
        )
        post.author.name = "Locked"
    assert post.author.publisher is not None
    if backend == "postgresql":  # SQLite has no FOR UPDATE
        assert log.matching("SELECT")[0].endswith("FOR UPDATE OF posts")


# -- iterator ------------------------------------------------------------------------------------


def test_iterator_streams_with_prefetched_collections_and_joined_authors(
    db: Database, blog: Blog
) -> None:
    with count_statements(db.engine) as log, blog:
        query = blog.posts.filter().select_related("author").prefetch_related("comments")
        seen = [(post.author.email, len(post.comments)) for post in query.iterator(chunk_size=5)]
    assert len(seen) == USERS * POSTS_PER_USER
    assert {count for _, count in seen} == {COMMENTS_PER_POST}
    chunks = -(-len(seen) // 5)
    assert len(log.matching("SELECT comments")) == chunks  # one prefetch per chunk
    assert not any("SELECT users" in s for s in log.statements)  # the authors came joined


def test_iterator_refuses_a_joined_collection_before_any_sql(db: Database, blog: Blog) -> None:
    with count_statements(db.engine) as log, blog:
        query = blog.users.filter().options(joinedload(User.posts))
        with pytest.raises(ValueError, match=r"prefetch_related") as caught:
            query.iterator(chunk_size=2)
    assert "User objects with a collection joined" in str(caught.value)
    assert log.count == 0


# -- on the wire (PostgreSQL's log) --------------------------------------------------------------


@pytest.fixture
def wired_blog() -> Iterator[tuple[Database, str]]:
    database, name = wire_database()
    prepared(database, "postgresql")
    with Blog(database):  # a warm pool: connecting sends statements of its own
        pass
    yield database, name
    clean_up(database, "postgresql")


def test_the_server_receives_one_statement_per_load_and_nothing_else(
    wired_blog: tuple[Database, str],
) -> None:
    database, name = wired_blog
    blog = Blog(database)
    expected = {
        "select_related": 1,
        "prefetch_related": 2,
        "chain": 3,
        "paginate": 2,
        "paginate_prefetch": 3,
    }
    sent: dict[str, list[str]] = {}
    for label in expected:
        with server_statements(name) as statements, blog:
            if label == "select_related":
                [p.author.name for p in blog.posts.filter().select_related("author").all()]
            elif label == "prefetch_related":
                [u.posts for u in blog.users.filter().prefetch_related("posts").all()]
            elif label == "chain":
                users = blog.users.filter().prefetch_related("posts__comments").all()
                [p.comments for u in users for p in u.posts]
            elif label == "paginate":
                posts = blog.posts.filter().select_related("author").paginate(1, 5)
                [p.author.name for p in posts.items]
            else:
                pages = blog.users.filter().prefetch_related("posts").paginate(1, 5)
                [u.posts for u in pages.items]
        sent[label] = statements
    assert {label: len(statements) for label, statements in sent.items()} == expected
    assert all(s.startswith("SELECT") for statements in sent.values() for s in statements)


# -- async ---------------------------------------------------------------------------------------


@pytest.fixture
async def adb(backend: str, tmp_path: Path) -> AsyncIterator[AsyncDatabase]:
    """The seeded tables behind an async driver: aiosqlite, or asyncpg."""
    sync = prepared(make_database(backend, tmp_path), backend)
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    else:
        url = postgres_url().replace("postgresql+psycopg://", "postgresql+asyncpg://")
    database = AsyncDatabase(url)
    yield database
    await database.dispose()
    clean_up(sync, backend)


async def test_touching_an_unloaded_collection_in_async_code_raises_at_once(
    adb: AsyncDatabase,
) -> None:
    blog = AsyncBlog(adb)
    with count_statements(adb.engine.sync_engine) as log:
        async with asyncio.timeout(30):  # a hang fails the test instead of blocking the run
            async with blog:
                user = await blog.users.one(email="u0@example.com")
                with pytest.raises(LazyLoadError) as caught:
                    user.posts  # noqa: B018
                assert await blog.users.count() == USERS  # the block goes on
    assert "prefetch_related" in str(caught.value)
    assert log.count == 2  # the one() and the count(): the lazy load sent nothing


# uow/async_session.py's _lazy_load_error looks for `_lazy_loaded_from` in the statement's
# compile options; SQLAlchemy's lazy loader passes it in the load options it gives execute()
# (execution_options["_sa_orm_load_options"]), so the message cannot name the attribute yet.


async def test_the_lazy_load_error_names_the_collection_and_the_fix(adb: AsyncDatabase) -> None:
    blog = AsyncBlog(adb)
    async with blog:
        user = await blog.users.one(email="u0@example.com")
        with pytest.raises(LazyLoadError) as caught:
            user.posts  # noqa: B018
    message = str(caught.value)
    assert message.startswith("User.posts is not loaded")
    assert 'prefetch_related("posts")' in message
    assert "selectinload(User.posts)" in message


async def test_the_lazy_load_error_names_a_many_to_one_too(adb: AsyncDatabase) -> None:
    blog = AsyncBlog(adb)
    async with blog:
        post = await blog.posts.first(title="Post 2.0")
        assert post is not None
        with pytest.raises(LazyLoadError, match=r"^Post.author is not loaded.*select_related"):
            post.author  # noqa: B018


async def test_async_prefetch_and_select_related_need_no_further_statements(
    adb: AsyncDatabase,
) -> None:
    blog = AsyncBlog(adb)
    with count_statements(adb.engine.sync_engine) as log:
        async with blog:
            [user] = await blog.users.filter(email="u0@example.com").prefetch_related("posts").all()
            titles = [post.title for post in user.posts]
            posts = await blog.posts.filter().select_related("author__publisher").all()
            names = {post.author.name for post in posts}
            chained = await blog.users.filter().prefetch_related("posts__comments").all()
            bodies = [c.body for u in chained for p in u.posts for c in p.comments]
    assert titles == ["Post 0.0", "Post 0.1"]
    assert len(names) == USERS
    assert len(bodies) == USERS * POSTS_PER_USER * COMMENTS_PER_POST
    assert log.count == 2 + 1 + 3


async def test_async_paginate_and_iterator_load_eagerly(adb: AsyncDatabase) -> None:
    blog = AsyncBlog(adb)
    with count_statements(adb.engine.sync_engine) as log:
        async with blog:
            query = (
                blog.posts.filter().select_related("author").options(selectinload(Post.comments))
            )
            page = await query.order_by("id").paginate(1, 5)
            on_page = [(p.author.email, len(p.comments)) for p in page.items]
    assert log.count == 3
    assert len(on_page) == 5
    assert page.total == USERS * POSTS_PER_USER
    async with blog:
        streamed = [
            (post.author.email, len(post.comments))
            async for post in blog.posts.filter().prefetch_related("comments", "author").iterator(4)
        ]
    assert len(streamed) == USERS * POSTS_PER_USER
    assert {count for _, count in streamed} == {COMMENTS_PER_POST}


async def test_the_async_builders_check_names_without_io(adb: AsyncDatabase) -> None:
    blog = AsyncBlog(adb)
    async with blog:
        with pytest.raises(FieldError, match=r"User has no relationship 'post'.*posts"):
            blog.users.filter().prefetch_related("post")
        with pytest.raises(FieldError, match=r"prefetch_related"):
            blog.users.filter().select_related("posts")


async def test_attributes_expired_by_a_rollback_raise_and_say_to_refresh(
    adb: AsyncDatabase,
) -> None:
    blog = AsyncBlog(adb)
    async with blog:
        user = await blog.users.one(email="u1@example.com")
        await blog.users.update(user, name="Changed")
        await blog.rollback()
        with pytest.raises(LazyLoadError) as caught:
            user.name  # noqa: B018
        await blog.session.refresh(user)
        assert user.name == "User 1"
    assert "User" in str(caught.value)
    assert "refresh(obj)" in str(caught.value)
    assert "expired" in str(caught.value)
