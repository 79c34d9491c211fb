"""A response of the async app (`examples/fastapi_async_app`) that nests a collection.

It extends the flat schemas of `schemas.py` (where `PostDetail` nests a post's author); whoever
builds one must have loaded the related objects with the query (see `async_repositories.py`).
"""

from __future__ import annotations

from .schemas import PostOut, UserOut


class UserWithPostsOut(UserOut):
    """A user with all their posts: load them with the user (`prefetch_related("posts")`)."""

    posts: list[PostOut]
