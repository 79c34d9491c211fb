"""The blog's HTTP API under FastAPI, with services injected by dependency-injector.

Run it with `uvicorn examples.fastapi_app.main:create_app --factory` (set `DATABASE_URL` to use
another database than `sqlite:///app.db`). Everything is built in `create_app`, nothing at import.
"""

# No `from __future__ import annotations` here: dependency-injector's `@inject` reads the
# `Annotated[..., Depends(Provide[...])]` markers from evaluated annotations.
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio.to_thread
from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI, Query, Response, status

from repositories import Page
from uow.integrations.fastapi import DatabaseMiddleware, install_exception_handlers, lifespan

from ..blog.containers import Container, create_tables
from ..blog.schemas import PostDetail, PostIn, PostOut, UserIn, UserOut
from ..blog.services import PostService, UserService

router = APIRouter()

Users = Annotated[UserService, Depends(Provide[Container.user_service])]
Posts = Annotated[PostService, Depends(Provide[Container.post_service])]
# A bound on the page keeps absurd numbers (page=10**19) a 422 rather than a 500; deep pages are
# better served by filtering (id__gt=<last id seen>) than by OFFSET anyway.
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
PerPage = Annotated[int, Query(ge=1, le=100)]


@router.post("/users", status_code=status.HTTP_201_CREATED)
@inject
def register(data: UserIn, response: Response, users: Users) -> UserOut:
    """Sync endpoint: FastAPI runs it in its thread pool."""
    user, created = users.register(data)
    if not created:
        response.status_code = status.HTTP_200_OK
    return user


@router.get("/users")
@inject
def list_users(users: Users, page: PageNumber = 1, per_page: PerPage = 20) -> Page[UserOut]:
    return users.list(page, per_page)


@router.get("/users/{user_id}")
@inject
async def get_user(user_id: int, users: Users) -> UserOut:
    """Async endpoint: the blocking database work goes to a worker thread."""
    return await anyio.to_thread.run_sync(users.get, user_id)


@router.post("/users/{user_id}/posts", status_code=status.HTTP_201_CREATED)
@inject
def publish(user_id: int, data: PostIn, posts: Posts) -> PostOut:
    return posts.publish(user_id, data)


@router.get("/users/{user_id}/posts")
@inject
def posts_by_author(
    user_id: int, posts: Posts, page: PageNumber = 1, per_page: PerPage = 20
) -> Page[PostOut]:
    return posts.by_author(user_id, page, per_page)


@router.get("/posts")
@inject
def recent_posts(posts: Posts, page: PageNumber = 1, per_page: PerPage = 20) -> Page[PostDetail]:
    """The newest posts with their authors: two statements per page (see PostService.recent)."""
    return posts.recent(page, per_page)


def create_app(container: Container | None = None) -> FastAPI:
    """The application, on `container` (a new one, configured from the environment, if None)."""
    container = container or Container()
    container.wire(modules=[__name__])
    close_resources = lifespan(container)

    @asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        create_tables(container)  # an example's shortcut for migrations
        async with close_resources(app):
            yield

    app = FastAPI(title="Blog", lifespan=app_lifespan)
    app.state.container = container
    # Sessions opened during a request are closed at its end; the provider is resolved per
    # request, so overriding `container.db.database` in a test takes effect.
    app.add_middleware(DatabaseMiddleware, databases=[container.db.database])
    install_exception_handlers(app)  # DoesNotExist → 404, a unique violation → 409
    app.include_router(router)
    return app
