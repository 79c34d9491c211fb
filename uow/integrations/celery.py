"""Celery: no session outliving a task.

```python
celery_app = Celery("app", broker=REDIS_URL)
init_app(celery_app, container.db.database)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uow.integrations._common import missing, remove_sessions

if TYPE_CHECKING:
    from celery import Celery

    from uow.integrations._common import DatabaseSource

try:
    from celery import signals
except ImportError as err:
    raise missing("celery", err) from err

__all__ = ["init_app"]


def init_app(app: Celery, *databases: DatabaseSource) -> None:
    """Connect the worker signal that closes each task's sessions.

    On `task_postrun` (also sent after a task raised) the context-local session of each
    database is closed and removed, so a task that used `db.s` outside `with uow:` does not
    leave a connection checked out or a transaction open for the next task. A session of a
    block still open (a task run eagerly inside `with uow:`) is left alone. Prefork worker
    processes need nothing more: every `Database` drops the pool a forked child inherits
    (without closing the parent's connections) by itself.

    Args:
        app: the Celery application; tasks of other applications are left alone.
        databases: the Databases, or callables returning them (such as a container's
            `db.database` provider, resolved in each worker process).
    """
    sources = tuple(databases)

    def _remove_sessions(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is app:
            remove_sessions(sources)

    # weak=False: the receiver is a closure that nothing else keeps alive.
    signals.task_postrun.connect(_remove_sessions, weak=False)
