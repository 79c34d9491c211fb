"""The application the worker end-to-end tests run in real Celery and RQ worker processes.

Workers read `DATABASE_URL` (through `DatabaseContainer`) and `UOW_TEST_REDIS_URL` from their
environment. Every task/job writes what it saw to a journal in Redis (a list of JSON entries):
the process, its number of tasks so far, whether the context-local session registry already held
a session and how many pool connections were checked out / idle. The tests read the journal.

The worker's parent process touches the database before it forks (Celery: `worker_init`; RQ:
before `work()`): it leaves a session in its context and an idle pooled connection carrying a
TEMP table, so a child that reused the inherited connection would see that table.

Start an RQ worker with `python -c "from tests.e2e.worker_app import run_rq_worker; ..."`, not
`python -m`, so the jobs and the worker share one module (and one Database).
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import Celery, signals
from sqlalchemy import func, inspect, select, text
from sqlalchemy.pool import QueuePool

from tests.models import AppUnitOfWork, User
from uow import Database
from uow.containers import DatabaseContainer
from uow.integrations.celery import init_app

REDIS_ENV = "UOW_TEST_REDIS_URL"
JOURNAL = "uow-e2e:journal"
PARENT_MARKER = "uow_e2e_parent_marker"
RQ_QUEUE = "uow-e2e"
RENDEZVOUS_TIMEOUT = 20

container = DatabaseContainer()

_tasks_per_process: dict[int, int] = {}
_redis_clients: dict[int, redis.Redis] = {}


def database() -> Database:
    return container.database()


def _redis() -> redis.Redis:
    pid = os.getpid()
    if pid not in _redis_clients:
        _redis_clients[pid] = redis.Redis.from_url(os.environ[REDIS_ENV])
    return _redis_clients[pid]


def _pool() -> QueuePool:
    pool = database().engine.pool
    assert isinstance(pool, QueuePool), pool
    return pool


def _record(label: str, phase: str, **extra: Any) -> dict[str, Any]:
    """Append what this process sees now to the journal, and return it."""
    db = database()
    entry: dict[str, Any] = {
        "label": label,
        "phase": phase,
        "pid": os.getpid(),
        "seq": _tasks_per_process.get(os.getpid(), 0),
        "has_session": db.s.registry.has(),
        "checked_out": _pool().checkedout(),
        "checked_in": _pool().checkedin(),
        **extra,
    }
    _redis().rpush(JOURNAL, json.dumps(entry))
    return entry


def _start(label: str, rendezvous: str | None, parties: int) -> dict[str, Any]:
    pid = os.getpid()
    _tasks_per_process[pid] = _tasks_per_process.get(pid, 0) + 1
    entry = _record(label, "start")
    if rendezvous is not None:
        _rendezvous(rendezvous, parties)
    return entry


def _rendezvous(name: str, parties: int) -> None:
    """Block until `parties` tasks reached this point: they run in as many processes at once."""
    client = _redis()
    key = f"uow-e2e:rendezvous:{name}"
    if client.incr(key) == parties:
        if parties > 1:
            client.rpush(f"{key}:go", *["go"] * (parties - 1))
        return
    if client.blpop([f"{key}:go"], timeout=RENDEZVOUS_TIMEOUT) is None:
        raise TimeoutError(f"rendezvous {name!r}: fewer than {parties} tasks ran at once")


def touch_database() -> None:
    """What the worker's parent does before forking: use the database, keep the session."""
    db = database()
    db.s.execute(text(f"CREATE TEMP TABLE {PARENT_MARKER} (id INTEGER)"))
    db.s.commit()
    # The parent keeps a session in its context and an idle connection in its pool.
    _record("worker", "parent")


# -- the work, shared by the Celery tasks and the RQ jobs -------------------------------------


def create_user_job(
    label: str, email: str, rendezvous: str | None = None, parties: int = 2
) -> dict[str, Any]:
    """Create a User in a unit of work; return its id and this process."""
    start = _start(label, rendezvous, parties)
    uow = AppUnitOfWork(database())
    with uow:
        user = uow.users.create(email=email, name=label)
    return {"start": start, "pid": os.getpid(), "user_id": user.id}


def diagnose_job(label: str, rendezvous: str | None = None, parties: int = 2) -> dict[str, Any]:
    """Read through `db.s` outside a unit of work and leave the session open, as code does."""
    start = _start(label, rendezvous, parties)
    db = database()
    session = db.s()
    users = db.s.scalar(select(func.count()).select_from(User))
    temp_tables = inspect(db.s.connection()).get_temp_table_names()
    end = _record(label, "end", in_transaction=db.s().in_transaction())
    return {
        "start": start,
        "end": end,
        "pid": os.getpid(),
        "session_id": id(session),
        "users": users,
        "parent_marker_visible": PARENT_MARKER in temp_tables,
    }


def failing_job(
    label: str, email: str, rendezvous: str | None = None, parties: int = 2
) -> dict[str, Any]:
    """Flush a User through `db.s` (no unit of work), then raise."""
    _start(label, rendezvous, parties)
    db = database()
    db.s.add(User(email=email, name=label))
    db.s.flush()
    _record(label, "end", in_transaction=db.s().in_transaction())
    raise RuntimeError(f"{label} failed on purpose after flushing {email}")


# -- Celery ----------------------------------------------------------------------------------


def configure_celery(app: Celery, redis_url: str) -> None:
    app.conf.update(
        broker_url=redis_url,
        result_backend=redis_url,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
    )


celery_app = Celery("uow_e2e", set_as_current=False)
configure_celery(celery_app, os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/0"))
init_app(celery_app, container.database)

create_user = celery_app.task(name="uow_e2e.create")(create_user_job)
diagnose = celery_app.task(name="uow_e2e.diagnose")(diagnose_job)
fail = celery_app.task(name="uow_e2e.fail")(failing_job)


@signals.worker_init.connect
def _touch_database_before_forking(**_: Any) -> None:
    touch_database()


# -- RQ --------------------------------------------------------------------------------------


def run_rq_worker() -> None:
    """Touch the database, then run a forking UowWorker until the queue is empty."""
    from rq import Queue

    from uow.integrations.rq import UowWorker

    connection = redis.Redis.from_url(os.environ[REDIS_ENV])
    touch_database()
    worker = UowWorker(
        [Queue(RQ_QUEUE, connection=connection)],
        connection=connection,
        databases=[container.database],
    )
    worker.work(burst=True, logging_level="WARNING")
