"""The blog's HTTP API under FastAPI, async from end to end: `async def` endpoints awaiting
services that run `async with` units of work on an AsyncDatabase.

Run it with `uvicorn examples.fastapi_async_app.main:create_app --factory` (set `DATABASE_URL`
to use another database than `sqlite:///app.db`, with an async driver: `postgresql+asyncpg://`
or `postgresql+psycopg://`; a `sqlite://` URL gets aiosqlite). Everything is built in
`create_app`, nothing at import.

It serves the API of `examples/fastapi_app` (the same paths, answers and errors), `GET /posts`
(the newest posts, each with its author) included, plus `GET /posts/{id}` (a post with its
author) and `GET /users/{id}/profile` (a user with all their posts). Nested objects are loaded
by the queries themselves (`select_related`, `prefetch_related`): async code cannot load them
when an attribute is read.
"""

# No `from __future__ import annotations` here: dependency-injector's `@inject` reads the
# `Annotated[..., Depends(Provide[...])]` markers from evaluated annotations.
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI, Query, Response, status

from repositories import Page
from uow.integrations.fastapi import DatabaseMiddleware, install_exception_handlers, lifespan

from ..blog.async_containers import AsyncContainer, create_tables
from ..blog.async_schemas import UserWithPostsOut
from ..blog.async_services import AsyncPostService, AsyncUserService
from ..blog.schemas import PostDetail, PostIn, PostOut, UserIn, UserOut

router = APIRouter()

Users = Annotated[AsyncUserService, Depends(Provide[AsyncContainer.user_service])]
Posts = Annotated[AsyncPostService, Depends(Provide[AsyncContainer.post_service])]
# As in examples/fastapi_app: absurd page numbers are a 422, not a 500.
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
PerPage = Annotated[int, Query(ge=1, le=100)]


@router.post("/users", status_code=status.HTTP_201_CREATED)
@inject
async def register(data: UserIn, response: Response, users: Users) -> UserOut:
    user, created = await users.register(data)
    if not created:
        response.status_code = status.HTTP_200_OK
    return user


@router.get("/users")
@inject
async def list_users(users: Users, page: PageNumber = 1, per_page: PerPage = 20) -> Page[UserOut]:
    return await users.list(page, per_page)


@router.get("/users/{user_id}")
@inject
async def get_user(user_id: int, users: Users) -> UserOut:
    return await users.get(user_id)  # DoesNotExist → 404 (install_exception_handlers)


@router.get("/users/{user_id}/profile")
@inject
async def get_profile(user_id: int, users: Users) -> UserWithPostsOut:
    return await users.profile(user_id)


@router.post("/users/{user_id}/posts", status_code=status.HTTP_201_CREATED)
@inject
async def publish(user_id: int, data: PostIn, posts: Posts) -> PostOut:
    return await posts.publish(user_id, data)


@router.get("/users/{user_id}/posts")
@inject
async def posts_by_author(
    user_id: int, posts: Posts, page: PageNumber = 1, per_page: PerPage = 20
) -> Page[PostOut]:
    return await posts.by_author(user_id, page, per_page)


@router.get("/posts")
@inject
async def recent_posts(
    posts: Posts, page: PageNumber = 1, per_page: PerPage = 20
) -> Page[PostDetail]:
    """The newest posts with their authors: two statements per page."""
    return await posts.recent(page, per_page)


@router.get("/posts/{post_id}")
@inject
async def get_post(post_id: int, posts: Posts) -> PostDetail:
    return await posts.get(post_id)


def create_app(container: AsyncContainer | None = None) -> FastAPI:
    """The application, on `container` (a new one, configured from the environment, if None)."""
    container = container or AsyncContainer()
    # Every call of the database provider returns an awaitable, also while a test overrides it
    # with a plain AsyncDatabase (`providers.Object`), so `create_tables` awaits it either way.
    container.db.async_database.enable_async_mode()
    container.wire(modules=[__name__])
    close_resources = lifespan(container)

    @asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        await create_tables(container)  # an example's shortcut for migrations
        async with close_resources(app):  # at shutdown: await the engine's disposal
            yield

    app = FastAPI(title="Blog (async)", lifespan=app_lifespan)
    app.state.container = container
    # Sessions opened during a request are closed (awaited) at its end; the provider is
    # resolved per request, so overriding `container.db.async_database` in a test applies.
    app.add_middleware(DatabaseMiddleware, databases=[container.db.async_database])
    install_exception_handlers(app)  # DoesNotExist → 404, a unique violation → 409
    app.include_router(router)
    return app
