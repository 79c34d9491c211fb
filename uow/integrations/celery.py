"""Celery: fresh connections in every worker process, and no session outliving a task.

```python
celery_app = Celery("app", broker=REDIS_URL)
init_app(celery_app, container.db.database)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uow.integrations._common import dispose_inherited, missing, remove_sessions

if TYPE_CHECKING:
    from celery import Celery

    from uow.integrations._common import DatabaseSource

try:
    from celery import signals
except ImportError as err:
    raise missing("celery", err) from err

__all__ = ["init_app"]


def init_app(app: Celery, *databases: DatabaseSource) -> None:
    """Connect the worker signals that keep database connections per process and per task.

    - `worker_process_init`: a prefork child drops the pool it inherited from the worker's
      parent process (without closing the parent's connections), so it opens its own.
      Every `Database` already does this at `os.fork()`; the signal also covers engines
      created in the parent before the fork hook existed, and documents the intent.
    - `task_postrun` (also sent after a task raised): the context-local session of each
      database is closed and removed, so a task that used `db.s` outside `with uow:` does not
      leave a connection checked out or a transaction open for the next task.

    Args:
        app: the Celery application; tasks of other applications are left alone.
        databases: the Databases, or callables returning them (such as a container's
            `db.database` provider, resolved in each worker process).
    """
    sources = tuple(databases)

    def _fresh_connections(**_: Any) -> None:
        dispose_inherited(sources)

    def _remove_sessions(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", app) is app:
            remove_sessions(sources)

    # weak=False: the receivers are closures that nothing else keeps alive.
    signals.worker_process_init.connect(_fresh_connections, weak=False)
    signals.task_postrun.connect(_remove_sessions, weak=False)
