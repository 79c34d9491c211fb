"""The repositories and the unit of work that exposes them."""

from __future__ import annotations

from repositories import Page, Repository
from uow import UnitOfWork

from .models import Post, User


class UserRepository(Repository[User]):
    def by_email(self, email: str) -> User | None:
        return self.first(email=email)


class PostRepository(Repository[Post]):
    def by_author(self, author_id: int, page: int, per_page: int) -> Page[Post]:
        query = self.filter(author_id=author_id).order_by("-created_at", "-id")
        return query.paginate(page, per_page)

    def recent(self, page: int, per_page: int) -> Page[Post]:
        """The newest posts of every author, each with its author loaded in the same SELECT
        (a JOIN): the page and its count are two statements, however many authors it shows."""
        query = self.query().select_related("author").order_by("-created_at", "-id")
        return query.paginate(page, per_page)


class BlogUnitOfWork(UnitOfWork):
    users: UserRepository
    posts: PostRepository
