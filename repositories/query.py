"""`Query[Model]`: a lazy, immutable, chainable query over one model, Django-style."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload
from weakref import WeakKeyDictionary

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    false,
    func,
    inspect,
    not_,
    select,
    update,
)
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

from repositories._checks import check_positive_int
from repositories._dialects import BIGINT_MAX, dialect_name
from repositories._eager import check_options, check_paths, loader_options
from repositories._fields import check_columns, check_fields
from repositories._streaming import plain_loader, stream
from repositories.errors import DoesNotExist, FieldError, MultipleObjectsReturned
from repositories.lookups import EmptyResult, build_conditions, template_conditions
from repositories.schemas import DEFAULT_MAX_PER_PAGE, Page

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from sqlalchemy import ScalarResult
    from sqlalchemy.orm import Session
    from sqlalchemy.sql.base import ExecutableOption

    from repositories._eager import Kind

__all__ = ["Query"]

ModelT = TypeVar("ModelT")


_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})
_KEPT_STATEMENTS = 512  # per model
_statements: WeakKeyDictionary[type[Any], dict[tuple[Any, ...], Select[Any]]] = WeakKeyDictionary()
_orderings: WeakKeyDictionary[type[Any], dict[str, Any]] = WeakKeyDictionary()


class Query(Generic[ModelT]):
    """A lazy query: nothing runs until a terminal method (`all`, `first`, `count`, ...).

    Every chaining method (`filter`, `exclude`, `order_by`, `select_related`,
    `prefetch_related`, `options`, slicing) returns a new `Query`; the original never changes,
    so a query can be kept and refined in several directions. Lookups and relationship names
    are validated when they are given, so a bad name raises
    [`FieldError`][uow.errors.FieldError] before any SQL. Raw SQLAlchemy expressions can be
    passed positionally to `filter`/`exclude`, and `statement()` gives the `Select` to extend.

    Examples:
        ```python
        adults = uow.users.filter(age__gte=18).exclude(email__endswith="@example.org")
        oldest_first = adults.order_by("-age", "email")[:10].all()
        with_posts = adults.prefetch_related("posts").all()  # 2 statements, not 1 + N
        ```
    """

    __slots__ = (
        "_cacheable",
        "_empty",
        "_for_update",
        "_limit",
        "_loads",
        "_model",
        "_offset",
        "_order",
        "_params",
        "_session",
        "_where",
    )

    def __init__(
        self,
        session: Session,
        model: type[ModelT],
        where: tuple[ColumnElement[bool], ...] = (),
        order: tuple[Any, ...] = (),
        limit: int | None = None,
        offset: int = 0,
        empty: bool = False,
        for_update: bool = False,
        params: Mapping[str, Any] = _NO_PARAMS,
        cacheable: bool = True,
        loads: tuple[Any, ...] = (),
    ) -> None:
        self._session = session
        self._model = model
        self._where = where
        self._order = order
        self._limit = limit
        self._offset = offset
        self._empty = empty
        self._for_update = for_update
        # Values of the bind parameters of template conditions in `_where` (see
        # `template_conditions`): passed with every execution.
        self._params = params
        # Whether every condition and ordering is one the library made once and keeps (a
        # template, a field's ordering): then the statements of this query's shape are kept
        # too, and reused by every query of that shape.
        self._cacheable = cacheable
        # What to load with the objects: ("select" | "prefetch", "author__publisher") pairs,
        # which are part of the query's shape, and raw loader options (see repositories._eager).
        self._loads = loads

    @property
    def model(self) -> type[ModelT]:
        """The mapped class this query returns."""
        return self._model

    def _copy(self, **changes: Any) -> Query[ModelT]:
        state: dict[str, Any] = {
            "where": self._where,
            "order": self._order,
            "limit": self._limit,
            "offset": self._offset,
            "empty": self._empty,
            "for_update": self._for_update,
            "params": self._params,
            "cacheable": self._cacheable,
            "loads": self._loads,
        }
        state.update(changes)
        return Query(self._session, self._model, **state)

    def _conditions(self, lookups: dict[str, Any]) -> list[ColumnElement[bool]]:
        if not lookups:
            return []
        return build_conditions(self._model, lookups, self._dialect)

    def _dialect(self) -> str:
        # Called only by the few operators whose SQL differs by database: get_bind() is not
        # free, and most lookups do not need it.
        return dialect_name(self._session, self._model)

    def _check_unsliced(self, what: str) -> None:
        if self._limit is not None or self._offset:
            raise TypeError(f"cannot {what} a query once it has been sliced")

    # -- chaining ------------------------------------------------------------------------------

    def filter(self, *expressions: ColumnElement[bool], **lookups: Any) -> Query[ModelT]:
        """Keep rows matching every lookup and every raw SQLAlchemy expression given."""
        self._check_unsliced("filter")
        # Templates only on a query of templates: their named parameters must not meet a raw
        # expression's (a user's bindparam, a subquery) in one statement.
        if lookups and not expressions and self._cacheable:
            template = template_conditions(self._model, lookups, len(self._params), self._dialect)
            if template is not None:
                kept, values = template
                return self._copy(where=(*self._where, *kept), params={**self._params, **values})
        try:
            conditions = self._conditions(lookups)
        except EmptyResult:
            return self._copy(empty=True)
        if not (expressions or conditions):
            return self._copy()  # a new query, as every chaining call returns
        # Anything else joins a query of its own: the template values are bound in first.
        where = (*self._bound_where(), *expressions, *conditions)
        return self._copy(where=where, params=_NO_PARAMS, cacheable=False)

    def exclude(self, *expressions: ColumnElement[bool], **lookups: Any) -> Query[ModelT]:
        """Drop rows matching all the lookups together (Django's `exclude`: NOT (a AND b))."""
        self._check_unsliced("exclude")
        try:
            conditions = [*expressions, *self._conditions(lookups)]
        except EmptyResult:
            return self  # the excluded set is empty, so nothing is dropped
        if not conditions:
            return self
        # NOT (x = 5) is NULL, not true, where x is NULL: coalesce keeps such rows, which do
        # not match the lookups (Django's exclude keeps them too).
        matched = func.coalesce(and_(*conditions), false())
        where = (*self._bound_where(), not_(matched))
        return self._copy(where=where, params=_NO_PARAMS, cacheable=False)

    def order_by(self, *fields: str | ColumnElement[Any]) -> Query[ModelT]:
        """Order by field names (`"-age"` for descending) or SQLAlchemy expressions.

        Replaces any earlier ordering, as Django does; `order_by()` with nothing clears it.
        """
        order: list[Any] = []
        kept = _orderings.setdefault(self._model, {})
        for field in fields:
            if not isinstance(field, str):
                order.append(field)
                continue
            ordering = kept.get(field)
            if ordering is None:
                name = field.removeprefix("-")
                check_fields(self._model, [name])
                column = getattr(self._model, name)
                if not hasattr(column, "desc") or name in _relationships(self._model):
                    raise FieldError(
                        f"cannot order {self._model.__name__} by relationship {name!r}"
                    )
                ordering = kept[field] = column.desc() if field.startswith("-") else column.asc()
            order.append(ordering)
        if all(isinstance(field, str) for field in fields):
            return self._copy(order=tuple(order))
        # A raw expression may carry parameters of its own: bind the template values in.
        return self._copy(
            order=tuple(order), where=self._bound_where(), params=_NO_PARAMS, cacheable=False
        )

    def select_for_update(self) -> Query[ModelT]:
        """Lock the rows this query reads until the transaction ends (Django's name).

        `SELECT ... FOR UPDATE` where the database has it. It is a write for lazy BEGIN: the
        transaction begins first, and on SQLite, which has no row locks, that BEGIN IMMEDIATE
        takes the database's write lock. Use it for read-modify-write blocks, whose plain
        reads would otherwise run before the lock is taken.

        Examples:
            ```python
            with uow:
                user = uow.users.filter(email="ada@example.com").select_for_update().one()
                user.age = (user.age or 0) + 1
            ```
        """
        return self._copy(for_update=True)

    # -- eager loading --------------------------------------------------------------------------

    def select_related(self, *names: str | None) -> Query[ModelT]:
        """Load these many-to-one or one-to-one relationships in the same SELECT (a JOIN).

        Django's `select_related`: `"author"`, or a chain through related models
        (`"author__publisher"`). SQLAlchemy's `joinedload`, a LEFT OUTER JOIN per step, so an
        object whose key is NULL is still returned (with None). Calls add up;
        `select_related(None)` forgets the earlier ones. With `select_for_update()` only the
        query's own rows are locked (`FOR UPDATE OF`), not the joined ones.

        Raises:
            FieldError: a name is not a relationship (the message lists the model's), or is a
                collection (use `prefetch_related`). Before any SQL.
            TypeError: no name is given.

        Examples:
            ```python
            posts = uow.posts.filter(title__startswith="Post").select_related("author").all()
            names = [post.author.name for post in posts]  # no more SQL
            ```
        """
        if len(names) == 1 and names[0] is None:
            return self._copy(loads=_without(self._loads, "select"))
        if not names:
            raise TypeError(
                "select_related() takes the relationships to join, e.g. "
                "select_related('author'); Django's form without names, which follows every "
                "foreign key, is not supported"
            )
        return self._with_loads("select", names)

    def prefetch_related(self, *names: str | None) -> Query[ModelT]:
        """Load these relationships, collections included, with one more SELECT each.

        Django's `prefetch_related`: `"posts"`, or a chain (`"posts__comments"`, one SELECT per
        step), whatever the number of objects. SQLAlchemy's `selectinload` (`WHERE key IN
        (...)`); it works with `paginate`, slicing and `iterator()` (one SELECT per chunk).
        Calls add up; `prefetch_related(None)` forgets the earlier ones.

        Raises:
            FieldError: a name is not a relationship (the message lists the model's), before
                any SQL.

        Examples:
            ```python
            users = uow.users.filter(age__gte=18).prefetch_related("posts").all()
            titles = {user.email: [post.title for post in user.posts] for user in users}
            ```
        """
        if len(names) == 1 and names[0] is None:
            return self._copy(loads=_without(self._loads, "prefetch"))
        return self._with_loads("prefetch", names)

    def options(self, *options: ExecutableOption) -> Query[ModelT]:
        """Apply SQLAlchemy loader options: `options(selectinload(User.posts))`.

        For what `select_related`/`prefetch_related` do not say: `raiseload("*")`,
        `load_only(...)`, `joinedload(...).selectinload(...)`, `with_loader_criteria(...)`.
        The options apply to every reading terminal; `count`, `exists`, `update` and `delete`
        ignore them. `iterator()` refuses a collection loaded with `joinedload`, whose rows
        cannot be streamed in chunks (use `selectinload`).

        Raises:
            TypeError: an argument is not a SQLAlchemy option.
            FieldError: a loader option starts from another model.
        """
        checked = check_options(self._model, options)
        if not checked:
            return self._copy()
        # Raw options are objects of the caller's: they cannot name a kept statement, and may
        # carry bind parameters of their own, so the template values are bound in.
        return self._copy(
            loads=(*self._loads, *checked),
            where=self._bound_where(),
            params=_NO_PARAMS,
            cacheable=False,
        )

    def _with_loads(self, kind: Kind, names: tuple[str | None, ...]) -> Query[ModelT]:
        paths = check_paths(self._model, kind, names)
        new = tuple((kind, path) for path in paths if (kind, path) not in self._loads)
        return self._copy(loads=(*self._loads, *dict.fromkeys(new)))

    @overload
    def __getitem__(self, key: int) -> ModelT: ...
    @overload
    def __getitem__(self, key: slice) -> Query[ModelT]: ...

    def __getitem__(self, key: int | slice) -> ModelT | Query[ModelT]:
        """`query[10:20]` is LIMIT 10 OFFSET 10 (a new Query); `query[3]` fetches one object."""
        if isinstance(key, int):
            if key < 0:
                raise ValueError("negative indexing is not supported; order the other way")
            rows = self[key : key + 1].all()
            if not rows:
                raise IndexError(f"query index {key} out of range")
            return rows[0]
        if not isinstance(key, slice):
            raise TypeError(f"query indices must be integers or slices, not {type(key).__name__}")
        if key.step not in (None, 1):
            raise ValueError("slicing a query with a step is not supported")
        start = key.start or 0
        if start < 0 or (key.stop is not None and key.stop < 0):
            raise ValueError("negative slice bounds are not supported; order the other way")
        if max(start, key.stop or 0) + self._offset > BIGINT_MAX:
            raise ValueError(f"slice bounds must stay within {BIGINT_MAX:,} rows")
        offset = self._offset + start
        limit = None if key.stop is None else max(0, key.stop - start)
        if self._limit is not None:
            available = max(0, self._limit - start)
            limit = available if limit is None else min(limit, available)
        return self._copy(limit=limit, offset=offset)

    # -- the statement -------------------------------------------------------------------------

    def statement(self) -> Select[Any]:
        """The SQLAlchemy `Select` this query runs, to extend with anything SQLAlchemy offers."""
        if not self._params:
            return self._select()
        return self._copy(where=self._bound_where(), params=_NO_PARAMS, cacheable=False)._select()

    def _select(self) -> Select[Any]:
        """`statement()`, its template parameters left unbound: run it with `self._params`."""
        statement = select(self._model).where(*self._where)
        if self._empty:
            # A lookup that can match nothing (in=[]): say so in SQL too, for the callers
            # that run the statement themselves (update_or_create, users of statement()).
            statement = statement.where(false())
        if self._order:
            statement = statement.order_by(*self._order)
        if self._limit is not None:
            statement = statement.limit(self._limit)
        if self._offset:
            statement = statement.offset(self._offset)
        if self._loads:
            statement = statement.options(*loader_options(self._model, self._loads))
        if self._for_update:
            # Joined rows are not locked: PostgreSQL refuses FOR UPDATE on the nullable side
            # of an outer join, and prefetched rows are read by statements of their own.
            of = self._model if self._loads else None
            statement = statement.with_for_update(of=of)
        return statement

    def _bound_where(self) -> tuple[ColumnElement[bool], ...]:
        """The conditions with the template values bound in as anonymous parameters of their
        own: for `statement()`, which may become part of another query's statement, for
        refinements by raw expressions, and for UPDATE and DELETE (an ORM UPDATE or DELETE
        given parameters would update by primary key)."""
        if not self._params:
            return self._where
        values = self._params

        def bound(element: Any, **_: Any) -> Any:
            if isinstance(element, BindParameter) and element.key in values:
                return bindparam(None, values[element.key], type_=element.type, unique=True)
            return None  # traverse into it

        return tuple(visitors.replacement_traverse(w, {}, bound) for w in self._where)

    def _kept(self, terminal: str, build: Callable[[], Select[Any]]) -> Select[Any]:
        """The statement `build` makes for `terminal`, made once per query shape when the
        query is cacheable: its conditions and orderings are the library's kept objects, so
        their identities (with the slice and flags) name the shape. Kept per model, weakly."""
        if not self._cacheable:
            return build()
        key = (
            terminal,
            tuple(map(id, self._where)),
            tuple(map(id, self._order)),
            self._limit,
            self._offset,
            self._empty,
            self._for_update,
            self._loads,
        )
        statements = _statements.setdefault(self._model, {})
        statement = statements.get(key)
        if statement is None:
            if len(statements) >= _KEPT_STATEMENTS:
                statements.clear()  # a bound, not an LRU: shapes are few in practice
            statement = statements[key] = build()
        return statement

    def _nothing(self) -> bool:
        return self._empty or self._limit == 0

    # -- reading -------------------------------------------------------------------------------

    def all(self) -> list[ModelT]:
        """Run the query and return every matching object."""
        if self._nothing():
            return []
        statement = self._kept("all", self._select)
        return list(self._rows(statement).all())

    def _rows(self, statement: Select[Any]) -> ScalarResult[Any]:
        rows = self._session.scalars(statement, self._params)
        if self._cacheable or all(isinstance(load, tuple) for load in self._loads):
            return rows  # no raw options, and select_related joins no collection
        # A collection joined by a raw option repeats its parent on each of its rows:
        # SQLAlchemy requires uniquing them (harmless otherwise: a row is one object).
        return rows.unique()

    def __iter__(self) -> Iterator[ModelT]:
        return iter(self.all())

    def first(self) -> ModelT | None:
        """The first matching object, ordered by primary key unless the query is ordered."""
        if self._nothing():
            return None

        def build() -> Select[Any]:
            statement = self._select()
            if not self._order:
                statement = statement.order_by(*_primary_key(self._model))
            if self._limit is None:  # a sliced query keeps its LIMIT; first() reads one row
                statement = statement.limit(1)
            return statement

        statement = self._kept("first", build)
        if self._cacheable and not (self._loads or self._for_update):
            # A plain model's row read into an object directly (see repositories._streaming).
            loader = plain_loader(self._session, self._model)
            if loader is not None:
                found: ModelT | None = loader.first(self._session, statement, self._params)
                return found
        return self._rows(statement).first()

    def one(self) -> ModelT:
        """Exactly one matching object (Django's `get`).

        Raises:
            DoesNotExist: no row matches.
            MultipleObjectsReturned: more than one row matches.
        """
        rows: Sequence[Any] = [] if self._nothing() else self[:2].all()
        if not rows:
            raise DoesNotExist(f"no {self._model.__name__} matches the lookups")
        if len(rows) > 1:
            raise MultipleObjectsReturned(
                f"more than one {self._model.__name__} matches the lookups; "
                "narrow them, or use first()"
            )
        found: ModelT = rows[0]
        return found

    def count(self) -> int:
        """How many rows match (`SELECT count(*)`), within the slice if there is one."""
        if self._nothing():
            return 0

        def build() -> Select[Any]:
            if self._limit is None and not self._offset:
                return select(func.count()).select_from(self._model).where(*self._where)
            inner = self._copy(order=(), loads=())._select().subquery()
            return select(func.count()).select_from(inner)

        return int(self._session.scalar(self._kept("count", build), self._params) or 0)

    def exists(self) -> bool:
        """Whether any row matches: `SELECT EXISTS (SELECT ... LIMIT 1)`."""
        if self._nothing():
            return False

        def build() -> Select[Any]:
            inner = select(*_primary_key(self._model)).where(*self._where)
            return select(inner.limit(1).offset(self._offset or None).exists())

        return bool(self._session.scalar(self._kept("exists", build), self._params))

    def iterator(self, chunk_size: int = 1000) -> Iterator[ModelT]:
        """Stream the matching objects, holding about `chunk_size` of them at a time.

        Rows are fetched `chunk_size` at a time (`yield_per`): a server-side cursor on
        PostgreSQL, lazy fetching on SQLite. The objects are ordinary objects of the session
        (change them and the changes are flushed), and an object the session already holds is
        returned as it is. The session keeps only weak references to unmodified objects, so
        memory stays bounded as long as you do not keep them. Consume it inside the unit of work.

        For a model with plain columns and lazy relationships the objects are built directly
        from the rows, about 2.5 times as fast as SQLAlchemy's general loader; other models
        (inheritance, deferred or SQL-expression columns, eager relationships, load events)
        and sessions with `do_orm_execute` listeners go through that loader.
        """
        check_positive_int("chunk_size", chunk_size)
        if self._nothing():
            return iter(())
        # The arguments are checked now, when iterator() is called, and the SQL runs at the
        # first next(): a streaming response has sent its headers by then, too late for a
        # ValueError.
        return stream(
            self._session, self._model, self.statement(), chunk_size, eager=bool(self._loads)
        )

    def paginate(
        self,
        page: int = 1,
        per_page: int = 20,
        *,
        max_per_page: int = DEFAULT_MAX_PER_PAGE,
        count: bool = True,
    ) -> Page[ModelT]:
        """One page of the results, ordered by primary key unless the query is ordered.

        `per_page` is capped at `max_per_page`; the page says which `per_page` it used.
        `count=False` skips the count query (`total` and `pages` are then None).

        Raises:
            ValueError: `page` or `per_page` is below 1, or the page starts beyond the
                largest OFFSET SQL takes (2**63 - 1).
        """
        self._check_unsliced("paginate")
        check_positive_int("page", page)
        check_positive_int("per_page", per_page)
        check_positive_int("max_per_page", max_per_page)
        per_page = min(per_page, max_per_page)
        query = self if self._order else self._copy(order=_primary_key(self._model))
        start = (page - 1) * per_page
        if start + per_page + 1 > BIGINT_MAX:
            raise ValueError(f"page {page} is too large: it would start past row {BIGINT_MAX:,}")
        rows = query[start : start + per_page + 1].all()  # one more row tells has_next
        total = query.count() if count else None
        return Page[Any](
            items=rows[:per_page],
            page=page,
            per_page=per_page,
            total=total,
            has_next=len(rows) > per_page,
        )

    # -- writing -------------------------------------------------------------------------------

    def update(self, **values: Any) -> int:
        """`UPDATE ... WHERE <this query>` in one statement; returns the number of rows.

        Objects of the session that match are updated in place (`synchronize_session="fetch"`).
        Bypasses ORM events and Python-side `onupdate` of the changed objects.
        """
        self._check_unsliced("update")
        check_columns(self._model, values)
        if self._empty or not values:
            return 0
        return self._run(update(self._model).where(*self._bound_where()).values(**values))

    def delete(self) -> int:
        """`DELETE ... WHERE <this query>` in one statement; returns the number of rows.

        Matching objects leave the session. ORM cascades do not run (the database's
        `ON DELETE` rules do).
        """
        self._check_unsliced("delete")
        if self._empty:
            return 0
        return self._run(delete(self._model).where(*self._bound_where()))

    def _run(self, statement: Any) -> int:
        # "fetch" keeps the objects already in the session in step with the bulk statement.
        result = self._session.execute(
            statement, execution_options={"synchronize_session": "fetch"}
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<Query of {self._model.__name__}: {self.statement()}>"


def _primary_key(model: type[Any]) -> tuple[Any, ...]:
    return tuple(inspect(model).primary_key)


def _without(loads: tuple[Any, ...], kind: Kind) -> tuple[Any, ...]:
    return tuple(load for load in loads if not (isinstance(load, tuple) and load[0] == kind))


def _relationships(model: type[Any]) -> set[str]:
    return set(inspect(model).relationships.keys())
