"""`Query[Model]`: a lazy, immutable, chainable query over one model, Django-style."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, func, inspect, not_, select

from repositories.lookups import EmptyResult, build_conditions, check_fields
from uow.errors import DoesNotExist, MultipleObjectsReturned

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from sqlalchemy.orm import Session

__all__ = ["Query"]

ModelT = TypeVar("ModelT")


class Query(Generic[ModelT]):
    """A lazy query: nothing runs until a terminal method (`all`, `first`, `count`, ...).

    Every chaining method returns a new `Query`; the original is never changed, so a query can
    be stored and refined in several directions. Lookups are validated when they are given, so a
    bad field name raises [`FieldError`][uow.errors.FieldError] before any SQL.

    Examples:
        ```python
        adults = repo.filter(age__gte=18).exclude(email__endswith="@example.org")
        oldest_first = adults.order_by("-age", "email").all()
        ```
    """

    __slots__ = ("_empty", "_model", "_order", "_session", "_where")

    def __init__(
        self,
        session: Session,
        model: type[ModelT],
        where: tuple[ColumnElement[bool], ...] = (),
        order: tuple[Any, ...] = (),
        empty: bool = False,
    ) -> None:
        self._session = session
        self._model = model
        self._where = where
        self._order = order
        self._empty = empty

    @property
    def model(self) -> type[ModelT]:
        """The mapped class this query returns."""
        return self._model

    def _copy(
        self,
        *,
        where: tuple[ColumnElement[bool], ...] | None = None,
        order: tuple[Any, ...] | None = None,
        empty: bool | None = None,
    ) -> Query[ModelT]:
        return Query(
            self._session,
            self._model,
            self._where if where is None else where,
            self._order if order is None else order,
            self._empty if empty is None else empty,
        )

    def filter(self, *expressions: ColumnElement[bool], **lookups: Any) -> Query[ModelT]:
        """Keep rows matching every lookup (and every raw SQLAlchemy expression given)."""
        try:
            conditions = build_conditions(self._model, lookups)
        except EmptyResult:
            return self._copy(empty=True)
        return self._copy(where=(*self._where, *expressions, *conditions))

    def exclude(self, *expressions: ColumnElement[bool], **lookups: Any) -> Query[ModelT]:
        """Drop rows matching all the lookups together (Django's `exclude`: NOT (a AND b))."""
        try:
            conditions = [*expressions, *build_conditions(self._model, lookups)]
        except EmptyResult:
            # The excluded set is empty, so nothing is dropped.
            return self
        if not conditions:
            return self
        return self._copy(where=(*self._where, not_(and_(*conditions))))

    def order_by(self, *fields: str | ColumnElement[Any]) -> Query[ModelT]:
        """Order by field names (`"-age"` for descending) or SQLAlchemy expressions.

        Replaces any earlier ordering, as Django does.
        """
        order: list[Any] = []
        for field in fields:
            if not isinstance(field, str):
                order.append(field)
                continue
            name = field.removeprefix("-")
            check_fields(self._model, [name])
            column = getattr(self._model, name)
            order.append(column.desc() if field.startswith("-") else column.asc())
        return self._copy(order=tuple(order))

    def statement(self) -> Select[Any]:
        """The SQLAlchemy `Select` this query runs, to extend with anything SQLAlchemy offers."""
        statement = select(self._model).where(*self._where)
        if self._order:
            statement = statement.order_by(*self._order)
        return statement

    def all(self) -> list[ModelT]:
        """Run the query and return every matching object."""
        if self._empty:
            return []
        return list(self._session.scalars(self.statement()).all())

    def __iter__(self) -> Iterator[ModelT]:
        return iter(self.all())

    def first(self) -> ModelT | None:
        """The first matching object, ordered by primary key unless the query is ordered."""
        if self._empty:
            return None
        statement = self.statement()
        if not self._order:
            statement = statement.order_by(*_primary_key(self._model))
        return self._session.scalars(statement.limit(1)).first()

    def one(self) -> ModelT:
        """Exactly one matching object (Django's `get`).

        Raises:
            DoesNotExist: no row matches.
            MultipleObjectsReturned: more than one row matches.
        """
        rows: Sequence[Any] = []
        if not self._empty:
            rows = self._session.scalars(self.statement().limit(2)).all()
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
        """How many rows match (`SELECT count(*)`)."""
        if self._empty:
            return 0
        statement = select(func.count()).select_from(self._model).where(*self._where)
        return int(self._session.scalar(statement) or 0)

    def exists(self) -> bool:
        """Whether any row matches: `SELECT EXISTS (SELECT ... LIMIT 1)`."""
        if self._empty:
            return False
        inner = select(*_primary_key(self._model)).where(*self._where).limit(1)
        return bool(self._session.scalar(select(inner.exists())))

    def __repr__(self) -> str:
        return f"<Query {self._model.__name__} where={len(self._where)} empty={self._empty}>"


def _primary_key(model: type[Any]) -> tuple[Any, ...]:
    return tuple(inspect(model).primary_key)
