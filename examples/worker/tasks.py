"""Background jobs for the blog, run by a Celery worker (prefork: one process per slot).

Start a worker with `celery -A examples.worker.tasks worker`; Celery takes the broker and the
result backend from `CELERY_BROKER_URL` and `CELERY_RESULT_BACKEND` (e.g. `redis://localhost`),
and the database from `DATABASE_URL`, like the web apps. `queue_welcomes` plugs the job into a
web app's container: the job is queued by `on_commit`, so it never runs for a post that was
rolled back.

Fork safety, which this worker relies on: the parent process touches the database before it
forks its children (`worker_init` creates the tables). Every `Database` makes its engine drop
inherited connections in a forked child, and `uow.integrations.celery.init_app` also has each
child start with a fresh pool and removes the context-local session after every task.
"""

from __future__ import annotations

from typing import Any, cast

from celery import Celery, signals
from dependency_injector import providers

from uow.integrations.celery import init_app

from ..blog.containers import Container, create_tables

# A container reads no configuration until it is first used, so creating it here (where
# Celery's `-A` option needs the app) opens nothing; the worker processes use it after forking.
container = Container()
celery_app = Celery("blog")
init_app(celery_app, container.db.database)


def _create_tables(**_: Any) -> None:
    create_tables(container)


# Runs once in the worker's parent process, before it forks the pool's children.
signals.worker_init.connect(_create_tables, weak=False)


def _welcome_post(post_id: int) -> bool:
    """Mark a new post as welcomed (where a real app would send an e-mail). Idempotent."""
    return container.post_service().mark_welcomed(post_id)


welcome_post = celery_app.task(name="blog.welcome_post")(_welcome_post)


def queue_welcomes(app_container: Container) -> None:
    """Make the web side's `PostService.publish` queue `welcome_post` for each new post.

    Call it once at start-up; `publish` calls `welcome_post.delay(post_id)` from `on_commit`,
    so the job never runs for a post whose transaction rolled back.
    """
    app_container.welcome.override(providers.Object(cast("Any", welcome_post).delay))
