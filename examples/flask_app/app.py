"""The blog's HTTP API under Flask, on the same services as the FastAPI app.

Run it with `flask --app examples.flask_app.app:create_app run` (set `DATABASE_URL` to use
another database than `sqlite:///app.db`). Everything is built in `create_app`.
"""

# No `from __future__ import annotations` here: dependency-injector's `@inject` reads the
# `Annotated[..., Provide[...]]` markers from evaluated annotations.
from typing import Annotated, Any

from dependency_injector.wiring import Provide, inject
from flask import Blueprint, Flask, request
from pydantic import BaseModel, Field, ValidationError

from uow.integrations.flask import init_app, install_exception_handlers

from ..blog.containers import Container, create_tables
from ..blog.schemas import PostIn, UserIn
from ..blog.services import PostService, UserService

blog = Blueprint("blog", __name__)

Json = tuple[dict[str, Any], int]
Users = Annotated[UserService, Provide[Container.user_service]]
Posts = Annotated[PostService, Provide[Container.post_service]]


class PageArgs(BaseModel):
    """The query string of a list endpoint, validated as FastAPI's `Query(ge=..., le=...)` is."""

    page: int = Field(default=1, ge=1, le=1_000_000)  # page=10**19 is a 422, not a 500
    per_page: int = Field(default=20, ge=1, le=100)


def _page_args() -> tuple[int, int]:
    args = PageArgs.model_validate(request.args.to_dict())  # ValidationError → 422
    return args.page, args.per_page


def _json(model: BaseModel, status: int = 200) -> Json:
    return model.model_dump(mode="json"), status


@blog.post("/users")
@inject
def register(users: Users) -> Json:
    user, created = users.register(UserIn.model_validate(request.get_json()))
    return _json(user, 201 if created else 200)


@blog.get("/users")
@inject
def list_users(users: Users) -> Json:
    return _json(users.list(*_page_args()))


@blog.get("/users/<int:user_id>")
@inject
def get_user(user_id: int, users: Users) -> Json:
    return _json(users.get(user_id))


@blog.post("/users/<int:user_id>/posts")
@inject
def publish(user_id: int, posts: Posts) -> Json:
    return _json(posts.publish(user_id, PostIn.model_validate(request.get_json())), 201)


@blog.get("/users/<int:user_id>/posts")
@inject
def posts_by_author(user_id: int, posts: Posts) -> Json:
    return _json(posts.by_author(user_id, *_page_args()))


def invalid(error: ValidationError) -> Json:
    # No `input` in the answer: a client sees what was wrong, not the data it was wrong in.
    detail = error.errors(include_url=False, include_context=False, include_input=False)
    return {"detail": detail}, 422


def create_app(container: Container | None = None) -> Flask:
    """The application, on `container` (a new one, configured from the environment, if None)."""
    container = container or Container()
    container.wire(modules=[__name__])
    app = Flask(__name__)
    app.extensions["container"] = container
    # Removes the context-local session after every request; the provider is resolved at each
    # teardown, so overriding `container.db.database` in a test takes effect.
    init_app(app, container.db.database)
    install_exception_handlers(app)  # DoesNotExist → 404, a unique violation → 409
    app.register_error_handler(ValidationError, invalid)
    app.register_blueprint(blog)
    create_tables(container)  # an example's shortcut for migrations
    return app
