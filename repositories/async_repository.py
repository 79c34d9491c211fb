"""`AsyncRepository[Model]` and `AsyncQuery[Model]`: the repository API, awaited.

One code path: every method runs the sync [`Repository`][repositories.Repository] or
[`Query`][repositories.Query] method of the same name on the `AsyncSession`'s own sync session,
inside SQLAlchemy's greenlet bridge (`greenlet_spawn`, which is how `AsyncSession` itself runs
the sync `Session`). The lookups, the get-or-create algorithms, bulk work and paging exist once;
this module only decides which calls are awaited. Where the sync code waits on the database,
the async driver's coroutine is awaited on the event loop instead.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from sqlalchemy.util import greenlet_spawn

from repositories.repository import Repository, Values, chosen_model, model_parameter
from repositories.schemas import DEFAULT_MAX_PER_PAGE, Page

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator

    from sqlalchemy import ColumnElement, Select
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.sql.base import ExecutableOption

    from repositories.query import Query

__all__ = ["AsyncQuery", "AsyncRepository"]

ModelT = TypeVar("ModelT")
R = TypeVar("R")


async def _bridge(function: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run the sync `function` where it may wait on the async driver (SQLAlchemy's bridge)."""
    return await greenlet_spawn(function, *args, **kwargs)


class AsyncQuery(Generic[ModelT]):
    """A lazy query, as [`Query`][repositories.Query], whose terminals are awaited.

    `filter`, `exclude`, `order_by`, `select_for_update`, `options`, `select_related`,
    `prefetch_related` and slicing (`query[10:20]`) build a new AsyncQuery without I/O; `all`,
    `first`, `one`, `count`, `exists`, `paginate`, `update` and `delete` are coroutines, and
    `query[n]` is awaitable; `iterator()` is an async iterator. `async for obj in query` awaits
    `all()` and iterates its result.

    Args:
        query: the sync query this one runs (on an `AsyncSession`'s `sync_session`).
    """

    __slots__ = ("_query",)

    def __init__(self, query: Query[ModelT]) -> None:
        self._query = query

    @property
    def model(self) -> type[ModelT]:
        """The mapped class this query returns."""
        return self._query.model

    @property
    def sync(self) -> Query[ModelT]:
        """The sync [`Query`][repositories.Query] this one runs, e.g. for `statement()`."""
        return self._query

    # -- building, without I/O ------------------------------------------------------------------

    def filter(self, *expressions: ColumnElement[bool], **lookups: Any) -> AsyncQuery[ModelT]:
        """See [`Query.filter`][repositories.Query.filter]."""
        return AsyncQuery(self._query.filter(*expressions, **lookups))

    def exclude(self, *expressions: ColumnElement[bool], **lookups: Any) -> AsyncQuery[ModelT]:
        """See [`Query.exclude`][repositories.Query.exclude]."""
        return AsyncQuery(self._query.exclude(*expressions, **lookups))

    def order_by(self, *fields: str | ColumnElement[Any]) -> AsyncQuery[ModelT]:
        """See [`Query.order_by`][repositories.Query.order_by]."""
        return AsyncQuery(self._query.order_by(*fields))

    def select_for_update(self) -> AsyncQuery[ModelT]:
        """See [`Query.select_for_update`][repositories.Query.select_for_update]."""
        return AsyncQuery(self._query.select_for_update())

    def select_related(self, *names: str | None) -> AsyncQuery[ModelT]:
        """See [`Query.select_related`][repositories.Query.select_related]."""
        return AsyncQuery(self._query.select_related(*names))

    def prefetch_related(self, *names: str | None) -> AsyncQuery[ModelT]:
        """See [`Query.prefetch_related`][repositories.Query.prefetch_related]."""
        return AsyncQuery(self._query.prefetch_related(*names))

    def options(self, *options: ExecutableOption) -> AsyncQuery[ModelT]:
        """See [`Query.options`][repositories.Query.options]."""
        return AsyncQuery(self._query.options(*options))

    @overload
    def __getitem__(self, key: int) -> Coroutine[Any, Any, ModelT]: ...

    @overload
    def __getitem__(self, key: slice) -> AsyncQuery[ModelT]: ...

    def __getitem__(self, key: int | slice) -> Coroutine[Any, Any, ModelT] | AsyncQuery[ModelT]:
        """`query[a:b]` is a sliced AsyncQuery; `await query[n]` is the n-th object."""
        if isinstance(key, slice):
            return AsyncQuery(self._query[key])
        return _bridge(self._query.__getitem__, key)

    def statement(self) -> Select[Any]:
        """See [`Query.statement`][repositories.Query.statement]."""
        return self._query.statement()

    # -- terminals, awaited ---------------------------------------------------------------------

    async def all(self) -> list[ModelT]:
        """See [`Query.all`][repositories.Query.all]."""
        return await _bridge(self._query.all)

    async def first(self) -> ModelT | None:
        """See [`Query.first`][repositories.Query.first]."""
        return await _bridge(self._query.first)

    async def one(self) -> ModelT:
        """See [`Query.one`][repositories.Query.one]."""
        return await _bridge(self._query.one)

    async def count(self) -> int:
        """See [`Query.count`][repositories.Query.count]."""
        return await _bridge(self._query.count)

    async def exists(self) -> bool:
        """See [`Query.exists`][repositories.Query.exists]."""
        return await _bridge(self._query.exists)

    async def paginate(
        self,
        page: int = 1,
        per_page: int = 20,
        *,
        max_per_page: int = DEFAULT_MAX_PER_PAGE,
        count: bool = True,
    ) -> Page[ModelT]:
        """See [`Query.paginate`][repositories.Query.paginate]."""
        return await _bridge(
            self._query.paginate, page, per_page, max_per_page=max_per_page, count=count
        )

    async def update(self, **values: Any) -> int:
        """See [`Query.update`][repositories.Query.update]."""
        return await _bridge(self._query.update, **values)

    async def delete(self) -> int:
        """See [`Query.delete`][repositories.Query.delete]."""
        return await _bridge(self._query.delete)

    def iterator(self, chunk_size: int = 1000) -> AsyncIterator[ModelT]:
        """Stream the matching objects: `async for obj in query.iterator(1000)`.

        See [`Query.iterator`][repositories.Query.iterator]: a server-side cursor on
        PostgreSQL, `chunk_size` rows fetched per round trip. The arguments are checked when
        `iterator()` is called. Leaving the loop early (`break`, an exception) closes the
        cursor (on asyncpg, whose cursors SQLAlchemy cannot close one by one, the server
        closes it when the transaction ends, with the block); consume it inside the unit of
        work.
        """
        return _stream(self._query.iterator(chunk_size), chunk_size)

    def __aiter__(self) -> AsyncIterator[ModelT]:
        return _all_then_iterate(self)

    def __repr__(self) -> str:
        return f"Async{self._query!r}"


async def _all_then_iterate(query: AsyncQuery[ModelT]) -> AsyncIterator[ModelT]:
    for obj in await query.all():
        yield obj


def _take(rows: Iterator[ModelT], size: int) -> list[ModelT]:
    return list(itertools.islice(rows, size))


async def _stream(rows: Iterator[ModelT], chunk_size: int) -> AsyncIterator[ModelT]:
    # One trip through the bridge per chunk, not per row: the sync stream fetches a chunk per
    # round trip anyway, and a greenlet switch per row would cost as much as building the row.
    try:
        while chunk := await _bridge(_take, rows, chunk_size):
            for obj in chunk:
                yield obj
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            await _bridge(close)  # closes the server-side cursor


class AsyncRepository(Generic[ModelT]):
    """Data access for one mapped class on an `AsyncSession`: the
    [`Repository`][repositories.Repository] API, awaited.

    ```python
    class UserRepository(AsyncRepository[User]):
        async def adults(self) -> list[User]:
            return await self.filter(age__gte=18).order_by("-age").all()
    ```

    Every method of `Repository` is here with the same arguments, defaults, results and errors;
    those that touch the database are coroutines, and `filter`/`exclude`/`query` return an
    [`AsyncQuery`][repositories.AsyncQuery] without I/O. They run the sync repository's code
    (see the module's docstring), so results, race safety and statement counts are the sync
    side's.

    Args:
        session: the `AsyncSession` to work on (in a unit of work, `uow.session`).
        model: the mapped class, when the repository class does not name one.
    """

    _model: ClassVar[type[Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = model_parameter(cls, AsyncRepository)
        if model is not None:
            cls._model = model

    def __init__(self, session: AsyncSession, model: type[ModelT] | None = None) -> None:
        self.session = session
        self.model: type[ModelT] = chosen_model(self, model, "AsyncRepository")
        self.sync: Repository[ModelT] = Repository(session.sync_session, self.model)
        """The sync [`Repository`][repositories.Repository] this one runs."""

    # -- reading -------------------------------------------------------------------------------

    def query(self) -> AsyncQuery[ModelT]:
        """An `AsyncQuery` over every row of the model, to chain from."""
        return AsyncQuery(self.sync.query())

    def filter(self, *expressions: Any, **lookups: Any) -> AsyncQuery[ModelT]:
        """See [`Repository.filter`][repositories.Repository.filter]."""
        return AsyncQuery(self.sync.filter(*expressions, **lookups))

    def exclude(self, *expressions: Any, **lookups: Any) -> AsyncQuery[ModelT]:
        """See [`Repository.exclude`][repositories.Repository.exclude]."""
        return AsyncQuery(self.sync.exclude(*expressions, **lookups))

    async def get(self, pk: Any) -> ModelT | None:
        """See [`Repository.get`][repositories.Repository.get]."""
        return await _bridge(self.sync.get, pk)

    async def one(self, *expressions: Any, **lookups: Any) -> ModelT:
        """See [`Repository.one`][repositories.Repository.one]."""
        return await _bridge(self.sync.one, *expressions, **lookups)

    async def first(self, *expressions: Any, **lookups: Any) -> ModelT | None:
        """See [`Repository.first`][repositories.Repository.first]."""
        return await _bridge(self.sync.first, *expressions, **lookups)

    async def all(self, *expressions: Any, **lookups: Any) -> list[ModelT]:
        """See [`Repository.all`][repositories.Repository.all]."""
        return await _bridge(self.sync.all, *expressions, **lookups)

    async def count(self, *expressions: Any, **lookups: Any) -> int:
        """See [`Repository.count`][repositories.Repository.count]."""
        return await _bridge(self.sync.count, *expressions, **lookups)

    async def exists(self, *expressions: Any, **lookups: Any) -> bool:
        """See [`Repository.exists`][repositories.Repository.exists]."""
        return await _bridge(self.sync.exists, *expressions, **lookups)

    async def paginate(
        self,
        page: int = 1,
        per_page: int = 20,
        *,
        max_per_page: int = DEFAULT_MAX_PER_PAGE,
        count: bool = True,
        **lookups: Any,
    ) -> Page[ModelT]:
        """See [`Repository.paginate`][repositories.Repository.paginate]."""
        return await _bridge(
            self.sync.paginate, page, per_page, max_per_page=max_per_page, count=count, **lookups
        )

    def iterator(self, chunk_size: int = 1000, **lookups: Any) -> AsyncIterator[ModelT]:
        """See [`AsyncQuery.iterator`][repositories.AsyncQuery.iterator]."""
        return self.filter(**lookups).iterator(chunk_size)

    async def in_bulk(self, ids: Iterable[Any], field_name: str = "id") -> dict[Any, ModelT]:
        """See [`Repository.in_bulk`][repositories.Repository.in_bulk]."""
        return await _bridge(self.sync.in_bulk, ids, field_name)

    # -- writing -------------------------------------------------------------------------------

    async def create(self, data: Values | None = None, /, **attrs: Any) -> ModelT:
        """See [`Repository.create`][repositories.Repository.create]."""
        return await _bridge(self.sync.create, data, **attrs)

    async def update(self, obj: ModelT, data: Values | None = None, /, **attrs: Any) -> ModelT:
        """See [`Repository.update`][repositories.Repository.update]."""
        return await _bridge(self.sync.update, obj, data, **attrs)

    async def delete(self, obj: ModelT) -> None:
        """See [`Repository.delete`][repositories.Repository.delete]."""
        await _bridge(self.sync.delete, obj)

    async def bulk_create(
        self,
        items: Iterable[Values | ModelT],
        batch_size: int | None = None,
        ignore_conflicts: bool = False,
        *,
        return_objects: bool = True,
        update_conflicts: bool = False,
        unique_fields: Iterable[str] | None = None,
        update_fields: Iterable[str] | None = None,
    ) -> list[ModelT]:
        """See [`Repository.bulk_create`][repositories.Repository.bulk_create]."""
        return await _bridge(
            self.sync.bulk_create,
            items,
            batch_size,
            ignore_conflicts,
            return_objects=return_objects,
            update_conflicts=update_conflicts,
            unique_fields=unique_fields,
            update_fields=update_fields,
        )

    # -- get-or-create -------------------------------------------------------------------------

    async def first_or_create(self, defaults: Values | None = None, **attrs: Any) -> ModelT:
        """See [`Repository.first_or_create`][repositories.Repository.first_or_create]."""
        return await _bridge(self.sync.first_or_create, defaults, **attrs)

    async def create_or_first(self, defaults: Values | None = None, **attrs: Any) -> ModelT:
        """See [`Repository.create_or_first`][repositories.Repository.create_or_first]."""
        return await _bridge(self.sync.create_or_first, defaults, **attrs)

    async def get_or_create(
        self, defaults: Values | None = None, **lookups: Any
    ) -> tuple[ModelT, bool]:
        """See [`Repository.get_or_create`][repositories.Repository.get_or_create]."""
        return await _bridge(self.sync.get_or_create, defaults, **lookups)

    async def update_or_create(
        self,
        defaults: Values | None = None,
        create_defaults: Values | None = None,
        **lookups: Any,
    ) -> tuple[ModelT, bool]:
        """See [`Repository.update_or_create`][repositories.Repository.update_or_create]."""
        return await _bridge(self.sync.update_or_create, defaults, create_defaults, **lookups)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.model.__name__}>"
