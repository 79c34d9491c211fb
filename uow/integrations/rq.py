"""RQ: a worker class whose jobs leave no session behind.

```python
worker = UowWorker([queue], connection=redis, databases=[db])
worker.work()
```

or, from the command line, a subclass naming its databases:
`rq worker --worker-class myapp.worker.Worker`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from uow.integrations._common import missing, remove_sessions

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rq.job import Job
    from rq.queue import Queue

    from uow.integrations._common import DatabaseSource

try:
    from rq import Worker
except ImportError as err:
    raise missing("rq", err) from err

__all__ = ["UowWorker"]


class UowWorker(Worker):
    """An `rq.Worker` whose jobs leave no session behind.

    Each job's context-local sessions are closed and removed when it ends, whether it succeeded
    or raised. RQ forks a work horse for each job: every `Database` already makes the horse
    drop the pools it inherited (without closing the worker's connections), so it opens its
    own. `SimpleWorker`-style in-process execution gets the session removal too.

    Args:
        *args: as for `rq.Worker`.
        databases: the Databases, or callables returning them (such as a container's
            `db.database` provider). Defaults to the class attribute `databases`, so a
            subclass can name them for `rq worker --worker-class`.
        **kwargs: as for `rq.Worker`.
    """

    databases: ClassVar[tuple[DatabaseSource, ...]] = ()

    def __init__(
        self, *args: Any, databases: Iterable[DatabaseSource] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if databases is not None:
            self.databases = tuple(databases)  # type: ignore[misc]

    # *args/**kwargs: RQ 3 added a third argument (`execution`) to these hooks; passing the
    # rest through serves RQ 2 and 3 alike.
    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        """Run the job, then close and remove the context-local sessions."""
        try:
            return bool(super().perform_job(job, queue, *args, **kwargs))
        finally:
            remove_sessions(self.databases)
