"""The blog's Celery worker example, end to end: a real prefork worker on a throwaway Redis.

The worker runs as a user starts it (`celery -A examples.worker.tasks worker`), configured only
through the environment, on SQLite and on PostgreSQL. The test process plays the web side: its
own container, with `queue_welcomes` plugging the job into `PostService.publish`. Every task
message the test process sends is observed through Celery's `after_task_publish` signal, so the
test waits on the real results (no sleeping) and can tell that a rolled-back post queued nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import signals
from sqlalchemy import create_engine, func, inspect, select, text

from examples.blog.containers import Container
from examples.blog.models import Post
from examples.blog.schemas import PostIn, UserIn
from examples.worker.tasks import celery_app, queue_welcomes, welcome_post
from tests.conftest import postgres_url
from tests.redis_server import close_celery_clients
from uow import Database

pytestmark = pytest.mark.slow  # real processes racing or working

ROOT = Path(__file__).resolve().parents[2]
WORKER_COMMAND = [
    sys.executable, "-m", "celery", "-A", "examples.worker.tasks", "worker",
    "--pool=prefork", "--concurrency=2", "--loglevel=WARNING",
]  # fmt: skip
STARTUP_TIMEOUT = 30.0
RESULT_TIMEOUT = 30.0
POSTS = 6


class Abandoned(Exception):
    """Raised to roll a unit of work back."""


def reset_schema(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The database the worker and the test share: a SQLite file, or an empty PostgreSQL."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'blog.db'}"
        return
    url = postgres_url()
    reset_schema(url)
    try:
        yield url
    finally:
        reset_schema(url)


@pytest.fixture
def broker(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """An empty Redis, which this process's Celery app (read from the environment) also uses."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    monkeypatch.setenv("CELERY_BROKER_URL", redis_url)
    monkeypatch.setenv("CELERY_RESULT_BACKEND", redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def worker(
    database_url: str, broker: redis.Redis, redis_url: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """The worker process; stopped with SIGTERM (a warm shutdown) however the test ends."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_RESULT_BACKEND": redis_url,
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            WORKER_COMMAND, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
                pytest.fail(f"the worker ignored SIGTERM:\n{log_path.read_text()}")


@pytest.fixture(autouse=True)
def _close_celery_clients() -> Iterator[None]:
    """Close the example app's client connections once the test is over (see the helper)."""
    yield
    close_celery_clients(celery_app)


@pytest.fixture
def web(database_url: str) -> Iterator[Container]:
    """The web side's container, on the worker's database, publishing through the job."""
    container = Container()
    container.db.config.url.from_value(database_url)
    queue_welcomes(container)
    try:
        yield container
    finally:
        container.shutdown_resources()


@pytest.fixture
def published() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """(task id, args) of every `welcome_post` message this process sends to the broker."""
    sent: list[tuple[str, tuple[Any, ...]]] = []

    def record(sender: Any = None, headers: Any = None, body: Any = None, **_: Any) -> None:
        if sender == welcome_post.name:
            sent.append((str(headers["id"]), tuple(body[0])))

    signals.after_task_publish.connect(record, weak=False)
    try:
        yield sent
    finally:
        signals.after_task_publish.disconnect(record)


def wait_for_tables(database: Database, worker: subprocess.Popen[bytes]) -> None:
    """Poll until the worker's `worker_init` has created the tables (or the worker died)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not inspect(database.engine).has_table("posts"):
        assert worker.poll() is None, f"the worker exited with {worker.returncode}"
        assert time.monotonic() < deadline, "the worker did not create the tables in time"
        time.sleep(0.05)


def welcomed_flags(database: Database) -> dict[int, bool]:
    with database.engine.connect() as connection:
        rows = connection.execute(select(Post.id, Post.welcomed))
        return {post_id: welcomed for post_id, welcomed in rows}


def count_posts(database: Database, **where: Any) -> int:
    query = select(func.count()).select_from(Post).filter_by(**where)
    with database.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def result_keys(broker: redis.Redis) -> list[bytes]:
    return list(broker.scan_iter(match="celery-task-meta-*"))


def test_a_real_worker_welcomes_committed_posts_only_and_its_job_can_run_again(
    worker: subprocess.Popen[bytes],
    web: Container,
    broker: redis.Redis,
    published: list[tuple[str, tuple[Any, ...]]],
) -> None:
    # One test per backend: starting and stopping a prefork worker is most of its runtime.
    database = web.db.database()
    wait_for_tables(database, worker)
    author, created = web.user_service().register(UserIn(email="ada@example.com", name="Ada"))
    assert created
    posts = [web.post_service().publish(author.id, PostIn(title=f"Post {n}")) for n in range(POSTS)]
    # One job per post, sent after its commit (on_commit), in publication order.
    assert [args for _, args in published] == [(post.id,) for post in posts]

    # A post published inside a unit of work that then fails: its savepoint's on_commit
    # callback is dropped with the outer rollback, so no message leaves this process.
    with pytest.raises(Abandoned):
        with web.uow():
            web.post_service().publish(author.id, PostIn(title="Doomed"))
            raise Abandoned
    assert len(published) == POSTS
    assert count_posts(database, title="Doomed") == 0

    # mark_welcomed returns True only when it found the post: no job ran before its commit.
    results = [celery_app.AsyncResult(task_id) for task_id, _ in published]
    assert [result.get(timeout=RESULT_TIMEOUT) for result in results] == [True] * POSTS
    assert welcomed_flags(database) == {post.id: True for post in posts}
    # The worker ran exactly the jobs sent above, and nothing waits in the queue.
    assert len(result_keys(broker)) == POSTS
    assert broker.llen("celery") == 0

    # Second phase, on the task itself: running it again is harmless, a missing post is False.
    again = welcome_post.delay(posts[0].id)
    missing = welcome_post.delay(max(post.id for post in posts) + 1000)
    assert again.get(timeout=RESULT_TIMEOUT) is True
    assert missing.get(timeout=RESULT_TIMEOUT) is False
    assert welcomed_flags(database) == {post.id: True for post in posts}
    assert count_posts(database) == POSTS
    assert database.engine.pool.checkedout() == 0
