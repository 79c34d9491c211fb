"""The async repositories and the async unit of work that exposes them.

The counterparts of `repositories.py` for the async app: the same queries, awaited. A response
that nests related objects loads them with the query (`select_related`, `prefetch_related`):
async code cannot load a relationship implicitly when an attribute is read (it raises
`LazyLoadError`, naming the attribute and the fix).
"""

from __future__ import annotations

from repositories import AsyncRepository, Page
from uow import AsyncUnitOfWork

from .models import Post, User


class AsyncUserRepository(AsyncRepository[User]):
    async def by_email(self, email: str) -> User | None:
        return await self.first(email=email)

    async def with_posts(self, user_id: int) -> User:
        """The user with `posts` loaded (one more SELECT); raises DoesNotExist."""
        return await self.filter(id=user_id).prefetch_related("posts").one()


class AsyncPostRepository(AsyncRepository[Post]):
    async def by_author(self, author_id: int, page: int, per_page: int) -> Page[Post]:
        query = self.filter(author_id=author_id).order_by("-created_at", "-id")
        return await query.paginate(page, per_page)

    async def recent(self, page: int, per_page: int) -> Page[Post]:
        """The newest posts of every author, each with its `author` joined in the same SELECT:
        the page and its count are two statements, however many authors it shows."""
        query = self.query().select_related("author").order_by("-created_at", "-id")
        return await query.paginate(page, per_page)

    async def with_author(self, post_id: int) -> Post:
        """The post with its `author` loaded; raises DoesNotExist."""
        return await self.filter(id=post_id).select_related("author").one()


class AsyncBlogUnitOfWork(AsyncUnitOfWork):
    users: AsyncUserRepository
    posts: AsyncPostRepository
