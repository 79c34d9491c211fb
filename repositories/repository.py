"""`Repository[Model]`: typed data access for one mapped class."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from repositories._integrity import is_unique_violation
from repositories.lookups import check_fields
from repositories.query import Query
from uow.errors import DoesNotExist

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["Repository"]

ModelT = TypeVar("ModelT")

Values = Mapping[str, Any] | BaseModel


class Repository(Generic[ModelT]):
    """Data access for one mapped class, on the session it is given.

    The model comes from the type parameter, so a subclass only names it once:

    ```python
    class UserRepository(Repository[User]):
        def adults(self) -> list[User]:
            return self.filter(age__gte=18).order_by("-age").all()
    ```

    `Repository[Post]` itself is usable too: a unit of work builds it as
    `Repository(session, Post)`. Methods that take lookups accept Django-style keys
    (`age__gte=18`) and raise [`FieldError`][uow.errors.FieldError] for unknown ones before any
    SQL runs. Methods that accept values take a pydantic model or a dict as `data`
    (`model_dump(exclude_unset=True)`), plus keyword attributes that override it.

    Args:
        session: the SQLAlchemy session to work on (in a unit of work, `uow.session`).
        model: the mapped class, when the repository class does not name one.
    """

    _model: ClassVar[type[Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            origin = get_origin(base)
            args = get_args(base)
            is_repository = isinstance(origin, type) and issubclass(origin, Repository)
            if is_repository and args and isinstance(args[0], type):
                cls._model = args[0]

    def __init__(self, session: Session, model: type[ModelT] | None = None) -> None:
        chosen = model if model is not None else type(self)._model
        if chosen is None:
            raise TypeError(
                f"{type(self).__name__} does not know its model: subclass Repository[Model] "
                "or pass the model, e.g. Repository(session, User)"
            )
        check_fields(chosen, ())  # raises TypeError for a class that is not mapped
        self.session = session
        self.model: type[ModelT] = chosen

    # -- reading -------------------------------------------------------------------------------

    def query(self) -> Query[ModelT]:
        """A `Query` over every row of the model, to chain from."""
        return Query(self.session, self.model)

    def filter(self, *expressions: Any, **lookups: Any) -> Query[ModelT]:
        """A lazy query of the rows matching the lookups (see [`Query`][repositories.Query])."""
        return self.query().filter(*expressions, **lookups)

    def exclude(self, *expressions: Any, **lookups: Any) -> Query[ModelT]:
        """A lazy query of the rows not matching the lookups taken together."""
        return self.query().exclude(*expressions, **lookups)

    def get(self, pk: Any) -> ModelT | None:
        """The object with primary key `pk` (a tuple for composite keys), or None.

        This is `Session.get`: the identity map first, then a SELECT by primary key.
        """
        return self.session.get(self.model, pk)

    def one(self, *expressions: Any, **lookups: Any) -> ModelT:
        """Exactly one object matching the lookups (Django's `get`).

        Raises:
            DoesNotExist: nothing matches.
            MultipleObjectsReturned: more than one row matches.
        """
        return self.filter(*expressions, **lookups).one()

    def first(self, *expressions: Any, **lookups: Any) -> ModelT | None:
        """The first object matching the lookups, by primary key, or None."""
        return self.filter(*expressions, **lookups).first()

    def all(self, *expressions: Any, **lookups: Any) -> list[ModelT]:
        """Every object matching the lookups (all of them when none are given)."""
        return self.filter(*expressions, **lookups).all()

    def count(self, *expressions: Any, **lookups: Any) -> int:
        """How many rows match the lookups."""
        return self.filter(*expressions, **lookups).count()

    def exists(self, *expressions: Any, **lookups: Any) -> bool:
        """Whether any row matches the lookups (`SELECT EXISTS(... LIMIT 1)`)."""
        return self.filter(*expressions, **lookups).exists()

    # -- writing -------------------------------------------------------------------------------

    def create(self, data: Values | None = None, /, **attrs: Any) -> ModelT:
        """Add a new object built from `data` and `attrs`, and flush it (so its key is set).

        Raises:
            FieldError: a key is not a mapped attribute of the model (before any SQL).
        """
        values = self._values(data, attrs)
        obj = self.model(**values)
        self.session.add(obj)
        self.session.flush()
        return obj

    def update(self, obj: ModelT, data: Values | None = None, /, **attrs: Any) -> ModelT:
        """Set attributes of `obj` from `data` (only the fields it set) and `attrs`, and flush.

        Raises:
            FieldError: a key is not a mapped attribute of the model (before any SQL).
        """
        self._check_instance(obj)
        for name, value in self._values(data, attrs).items():
            setattr(obj, name, value)
        self.session.flush()
        return obj

    def delete(self, obj: ModelT) -> None:
        """Delete `obj` and flush."""
        self._check_instance(obj)
        self.session.delete(obj)
        self.session.flush()

    # -- race-safe get-or-create ---------------------------------------------------------------

    def first_or_create(self, defaults: Values | None = None, **attrs: Any) -> ModelT:
        """The first object with these attributes, or a new one made of `attrs` and `defaults`.

        A hit is one SELECT. A miss INSERTs inside a SAVEPOINT; if a concurrent transaction
        inserted the same unique values first, the savepoint (and only it) is rolled back and
        the winner's row is read and returned. Any other integrity error propagates with the
        outer transaction still usable. Race-safe on PostgreSQL at READ COMMITTED, and on SQLite.

        Raises:
            FieldError: a key of `attrs` or `defaults` is not a mapped attribute (before SQL).
            sqlalchemy.exc.IntegrityError: the insert broke a constraint other than a unique
                one, or a unique one while no row matching `attrs` is visible (for example
                under REPEATABLE READ).
        """
        values = self._create_values(attrs, defaults)
        found = self.first(**attrs)
        if found is not None:
            return found
        return self._insert_or_find(values, lambda: self.first(**attrs))[0]

    def create_or_first(self, defaults: Values | None = None, **attrs: Any) -> ModelT:
        """Insert a new object first; on a unique violation return the existing one.

        Cheaper than `first_or_create` when a miss is the common case. The INSERT runs inside
        a SAVEPOINT, so a conflict never rolls back the caller's other work. Same errors as
        `first_or_create`.
        """
        values = self._create_values(attrs, defaults)
        return self._insert_or_find(values, lambda: self.first(**attrs))[0]

    def get_or_create(self, defaults: Values | None = None, **lookups: Any) -> tuple[ModelT, bool]:
        """Django's `get_or_create`: `(object, created)`.

        Looks the object up with `one(**lookups)`; if absent, creates it from the lookups that
        have no `__` operator plus `defaults`, race-safely as `first_or_create` does.

        Raises:
            MultipleObjectsReturned: more than one row matches the lookups.
        """
        plain = {key: value for key, value in lookups.items() if "__" not in key}
        values = self._create_values(plain, defaults)
        query = self.filter(**lookups)  # validates every lookup before any SQL
        try:
            return query.one(), False
        except DoesNotExist:
            pass

        def find() -> ModelT | None:
            try:
                return query.one()
            except DoesNotExist:
                return None

        return self._insert_or_find(values, find)

    def _insert_or_find(
        self, values: dict[str, Any], find: Callable[[], ModelT | None]
    ) -> tuple[ModelT, bool]:
        session = self.session
        # Flush the caller's pending changes first: their errors are theirs, raised outside
        # our savepoint and never mistaken for a conflict on our row.
        session.flush()
        try:
            with session.begin_nested():
                obj = self.model(**values)
                session.add(obj)
                session.flush()
        except IntegrityError as error:
            if not is_unique_violation(error):
                raise
            existing = find()
            if existing is None:
                # The conflicting row is invisible to us (e.g. REPEATABLE READ): nothing to return.
                raise
            return existing, False
        return obj, True

    # -- values --------------------------------------------------------------------------------

    def _values(self, data: Values | None, attrs: Mapping[str, Any]) -> dict[str, Any]:
        if data is None:
            values: dict[str, Any] = {}
        elif isinstance(data, BaseModel):
            values = data.model_dump(exclude_unset=True)
        elif isinstance(data, Mapping):
            values = dict(data)
        else:
            raise TypeError(
                f"data must be a pydantic model or a mapping, not {type(data).__name__}"
            )
        values.update(attrs)
        check_fields(self.model, values)
        return values

    def _create_values(self, attrs: Mapping[str, Any], defaults: Values | None) -> dict[str, Any]:
        check_fields(self.model, attrs)
        return {**self._values(defaults, {}), **attrs}

    def _check_instance(self, obj: Any) -> None:
        if not isinstance(obj, self.model):
            raise TypeError(f"expected a {self.model.__name__}, got {type(obj).__name__}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.model.__name__}>"
