"""The use cases. Each method is one unit of work: schemas in, schemas out.

Services know nothing of HTTP or queues, so the FastAPI app, the Flask app and the worker share
them; the container injects their unit of work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from repositories import DoesNotExist, Page

from .schemas import PostDetail, PostIn, PostOut, UserIn, UserOut

if TYPE_CHECKING:
    from collections.abc import Callable

    from .repositories import BlogUnitOfWork


class UserService:
    def __init__(self, uow: BlogUnitOfWork) -> None:
        self.uow = uow

    def register(self, data: UserIn) -> tuple[UserOut, bool]:
        """The user with this email, created from `data` if new; and whether it was created."""
        with self.uow:
            user, created = self.uow.users.get_or_create(email=data.email, defaults=data)
        return UserOut.model_validate(user), created

    def get(self, user_id: int) -> UserOut:
        """Raises DoesNotExist when there is no such user."""
        with self.uow:
            user = self.uow.users.one(id=user_id)
        return UserOut.model_validate(user)

    def list(self, page: int, per_page: int) -> Page[UserOut]:
        with self.uow:
            return self.uow.users.query().order_by("id").paginate(page, per_page).map(UserOut)


class PostService:
    def __init__(self, uow: BlogUnitOfWork, welcome: Callable[[int], object] | None = None) -> None:
        self.uow = uow
        # Called with the new post's id after the commit (e.g. to queue a background job).
        self.welcome = welcome

    def publish(self, author_id: int, data: PostIn) -> PostOut:
        """Raises DoesNotExist when the author does not exist."""
        with self.uow:
            if not self.uow.users.exists(id=author_id):
                raise DoesNotExist(f"no user with id {author_id}")
            post = self.uow.posts.create(data, author_id=author_id)
            welcome = self.welcome
            if welcome is not None:
                post_id = post.id
                # After the commit only: a job must never see a post that was rolled back.
                # robust: if the broker is down, the post is still published (and logged);
                # a periodic sweep over `welcomed=False` posts can queue what was missed.
                self.uow.on_commit(lambda: welcome(post_id), robust=True)
        return PostOut.model_validate(post)

    def by_author(self, author_id: int, page: int, per_page: int) -> Page[PostOut]:
        with self.uow:
            return self.uow.posts.by_author(author_id, page, per_page).map(PostOut)

    def recent(self, page: int, per_page: int) -> Page[PostDetail]:
        """The newest posts, each with its author (PostDetail nests it)."""
        with self.uow:
            return self.uow.posts.recent(page, per_page).map(PostDetail)

    def mark_welcomed(self, post_id: int) -> bool:
        """Flag the post as welcomed; False when it is gone. Safe to run twice."""
        with self.uow:
            post = self.uow.posts.get(post_id)
            if post is None:
                return False
            self.uow.posts.update(post, welcomed=True)
        return True
