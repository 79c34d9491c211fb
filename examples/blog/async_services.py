"""The use cases for async callers: `services.py`'s, each one `async with` unit of work.

Schemas in, schemas out, as in `services.py`: the async FastAPI app
(`examples/fastapi_async_app`) awaits them; the container (`async_containers.py`) injects their
unit of work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from repositories import DoesNotExist, Page

from .async_schemas import UserWithPostsOut
from .schemas import PostDetail, PostIn, PostOut, UserIn, UserOut

if TYPE_CHECKING:
    from .async_repositories import AsyncBlogUnitOfWork


class AsyncUserService:
    def __init__(self, uow: AsyncBlogUnitOfWork) -> None:
        self.uow = uow

    async def register(self, data: UserIn) -> tuple[UserOut, bool]:
        """The user with this email, created from `data` if new; and whether it was created."""
        async with self.uow:
            user, created = await self.uow.users.get_or_create(email=data.email, defaults=data)
        return UserOut.model_validate(user), created

    async def get(self, user_id: int) -> UserOut:
        """Raises DoesNotExist when there is no such user."""
        async with self.uow:
            user = await self.uow.users.one(id=user_id)
        return UserOut.model_validate(user)

    async def profile(self, user_id: int) -> UserWithPostsOut:
        """The user and all their posts. Raises DoesNotExist when there is no such user."""
        async with self.uow:
            user = await self.uow.users.with_posts(user_id)
        return UserWithPostsOut.model_validate(user)

    async def list(self, page: int, per_page: int) -> Page[UserOut]:
        async with self.uow:
            users = await self.uow.users.query().order_by("id").paginate(page, per_page)
        return users.map(UserOut)


class AsyncPostService:
    def __init__(self, uow: AsyncBlogUnitOfWork) -> None:
        self.uow = uow

    async def publish(self, author_id: int, data: PostIn) -> PostOut:
        """Raises DoesNotExist when the author does not exist."""
        async with self.uow:
            if not await self.uow.users.exists(id=author_id):
                raise DoesNotExist(f"no user with id {author_id}")
            post = await self.uow.posts.create(data, author_id=author_id)
        return PostOut.model_validate(post)

    async def by_author(self, author_id: int, page: int, per_page: int) -> Page[PostOut]:
        async with self.uow:
            posts = await self.uow.posts.by_author(author_id, page, per_page)
        return posts.map(PostOut)

    async def recent(self, page: int, per_page: int) -> Page[PostDetail]:
        """The newest posts, each with its author (PostDetail nests it)."""
        async with self.uow:
            posts = await self.uow.posts.recent(page, per_page)
        return posts.map(PostDetail)

    async def get(self, post_id: int) -> PostDetail:
        """Raises DoesNotExist when there is no such post."""
        async with self.uow:
            post = await self.uow.posts.with_author(post_id)
        return PostDetail.model_validate(post)
