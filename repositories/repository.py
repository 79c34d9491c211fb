"""`Repository[Model]`: typed data access for one mapped class."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from repositories._bulk import chunks, insert_rows, rows_of
from repositories._checks import check_positive_int
from repositories._dialects import dialect_name, has_on_conflict, parameter_limit
from repositories._fields import check_fields, fields_of
from repositories._integrity import (
    conflict_error,
    insertable_with_on_conflict,
    is_unique_violation,
)
from repositories._links import detach, expire_collections, fill_foreign_keys
from repositories._streaming import plain_loader
from repositories._unique import unique_column
from repositories._upsert import upsert_of
from repositories.errors import DoesNotExist, MultipleObjectsReturned
from repositories.lookups import check_key
from repositories.query import Query
from repositories.schemas import DEFAULT_MAX_PER_PAGE, Page

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["Repository"]

ModelT = TypeVar("ModelT")

Values = Mapping[str, Any] | BaseModel


def model_parameter(cls: type[Any], generic: type[Any]) -> type[Any] | None:
    """The model `cls` names as the type parameter of `generic` (`class R(generic[User])`)."""
    model = None
    for base in getattr(cls, "__orig_bases__", ()):
        origin = get_origin(base)
        args = get_args(base)
        is_generic = isinstance(origin, type) and issubclass(origin, generic)
        if is_generic and args and isinstance(args[0], type):
            model = args[0]
    return model


def chosen_model(repository: Any, model: type[ModelT] | None, generic: str) -> type[ModelT]:
    """The model a repository works on: the one passed, else its class's; checked mapped."""
    chosen: type[ModelT] | None = model if model is not None else type(repository)._model
    if chosen is None:
        name = type(repository).__name__
        raise TypeError(
            f"{name} does not know its model: subclass {generic}[Model] "
            f"or pass the model, e.g. {generic}(session, User)"
        )
    fields_of(chosen)  # cached; raises TypeError for a class that is not mapped
    return chosen


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
        model = model_parameter(cls, Repository)
        if model is not None:
            cls._model = model

    def __init__(self, session: Session, model: type[ModelT] | None = None) -> None:
        self.session = session
        self.model: type[ModelT] = chosen_model(self, model, "Repository")

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

        This is `Session.get`: the identity map first, then a SELECT by primary key. The key
        is checked first, as `filter(id=...)` checks its value: a key no row can have (an
        integer wider than its column) returns None without SQL.

        Raises:
            FieldError: a key value has the wrong type for its column (before any SQL).
        """
        if not check_key(self.model, pk, self._dialect):
            return None
        loader = plain_loader(self.session, self.model)
        if loader is None:
            return self.session.get(self.model, pk)
        # Session.get's steps, with the SELECT of a plain model read into an object directly
        # (see repositories._streaming).
        found: ModelT | None = loader.get(self.session, pk)
        return found

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

    def paginate(
        self,
        page: int = 1,
        per_page: int = 20,
        *,
        max_per_page: int = DEFAULT_MAX_PER_PAGE,
        count: bool = True,
        **lookups: Any,
    ) -> Page[ModelT]:
        """One page of the rows matching the lookups (see `Query.paginate`).

        Raw SQLAlchemy expressions go through `filter()`:
        `repository.filter(User.age > 3).paginate(1, 20)`.
        """
        return self.filter(**lookups).paginate(
            page, per_page, max_per_page=max_per_page, count=count
        )

    def iterator(self, chunk_size: int = 1000, **lookups: Any) -> Iterator[ModelT]:
        """Stream the rows matching the lookups (see `Query.iterator`).

        Raw SQLAlchemy expressions go through `filter()`:
        `repository.filter(User.age > 3).iterator(1000)`.
        """
        return self.filter(**lookups).iterator(chunk_size)

    def in_bulk(self, ids: Iterable[Any], field_name: str = "id") -> dict[Any, ModelT]:
        """`{value: object}` for the objects whose unique `field_name` is in `ids`.

        Runs one `IN` query per chunk of values, sized to stay under the database's limit on
        bound parameters. Values with no row are absent from the result.

        Raises:
            FieldError: `field_name` is not a unique column of the model.
        """
        column = unique_column(self.model, field_name)
        values = list(dict.fromkeys(ids))
        found: dict[Any, ModelT] = {}
        for chunk in chunks(values, parameter_limit(self._dialect())):
            for obj in self.session.scalars(select(self.model).where(column.in_(chunk))):
                found[getattr(obj, field_name)] = obj
        return found

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

    def bulk_create(
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
        """Insert many rows with multi-row INSERT statements; return the new objects in order.

        `items` are dicts, pydantic models (fields that were set) or model instances (their
        column values, and the foreign keys of the many-to-one objects set on them, as
        `Post(author=ada)`; the returned objects are new ones the session holds, the
        instances given stay transient). Every item is validated before any SQL. With
        `ignore_conflicts=True` rows that break a unique constraint are skipped (`ON CONFLICT
        DO NOTHING`, PostgreSQL and SQLite) and are absent from the result. Objects come back
        with their primary keys where the database can return them (PostgreSQL, SQLite);
        elsewhere they are built from the given values.
        Empty input runs no SQL. It is all or nothing: when a row fails, none of its rows stay
        (earlier batches included) and the transaction remains usable (after earlier writes
        its statements run inside one SAVEPOINT; as the transaction's first write they need
        none).

        Upsert (Django's names): with `update_conflicts=True`, a row whose `unique_fields`
        (together the primary key, a unique constraint or an unconditional unique index)
        match an existing row updates that row's `update_fields` with the values proposed
        (`INSERT ... ON CONFLICT (unique_fields) DO UPDATE SET f = EXCLUDED.f`, PostgreSQL and
        SQLite). Every row comes back, inserted or updated, in input order; objects the session
        already held are refreshed. A field a row leaves out updates to what an insert would
        have stored (its default, or NULL). Rows are sent sorted by their unique values, so
        concurrent upserts of the same keys neither fail nor deadlock (at READ COMMITTED).

        Building the objects costs more than the INSERT itself for large loads: with
        `return_objects=False` an empty list is returned and the rows go through PostgreSQL's
        COPY (psycopg 3; several times the rows per second of an INSERT), or elsewhere, and
        with conflict handling, SQLAlchemy Core's `executemany`. COPY computes the Python
        defaults of the columns a row leaves out (`default=`), as an INSERT does; a model with
        an SQL default (`default=func.now()`, a `Sequence`) keeps the INSERT.

        Raises:
            ValueError: `batch_size` is not None nor a positive integer; `ignore_conflicts`
                with `update_conflicts`; `unique_fields` or `update_fields` without
                `update_conflicts`; two items with the same `unique_fields` values.
            TypeError: a string in the place of a list of field names.
            FieldError: an item has a key that is not a column of the model, or an instance
                holds related objects bulk_create cannot save (a collection, or a many-to-one
                object that has no key and is not in the session); with `update_conflicts`,
                an unknown field, `unique_fields` that are not unique together
                (unconditionally), or `update_fields` empty or naming a unique field or the
                primary key. All before any SQL.

        Examples:
            ```python
            users = uow.users.bulk_create(
                [{"email": "ada@example.com", "name": "Ada L."}],
                update_conflicts=True,
                unique_fields=["email"],
                update_fields=["name"],
            )
            ```
        """
        check_positive_int("batch_size", batch_size, optional=True)
        upsert = upsert_of(
            self.model,
            ignore_conflicts=ignore_conflicts,
            update_conflicts=update_conflicts,
            unique_fields=unique_fields,
            update_fields=update_fields,
        )
        rows, related = rows_of(self.model, items)
        if not rows:
            return []
        detach(self.session, related)
        self.session.flush()
        fill_foreign_keys(related)
        created = insert_rows(
            self.session,
            self.model,
            rows,
            batch_size,
            ignore_conflicts,
            return_objects,
            upsert=upsert,
        )
        expire_collections(self.session, related)
        return created

    # -- race-safe get-or-create ---------------------------------------------------------------

    def first_or_create(self, defaults: Values | None = None, **attrs: Any) -> ModelT:
        """The first object with these attributes, or a new one made of `attrs` and `defaults`.

        A hit is one SELECT. A miss sends `INSERT ... ON CONFLICT DO NOTHING RETURNING`
        (PostgreSQL, SQLite): if a concurrent transaction inserted the same unique values
        first, the INSERT returns no row instead of failing, and the winner's row is read and
        returned. Any other integrity error (NOT NULL, foreign key) propagates with the block
        still usable: a SAVEPOINT shields the block's earlier writes, and when the INSERT is
        the block's first write (lazy BEGIN) there is nothing to shield and no SAVEPOINT is
        sent. Other databases insert in a SAVEPOINT and catch the unique violation.
        Race-safe on PostgreSQL at READ COMMITTED, and on SQLite.

        The row is built as an object (its `__init__` and validators run; related objects set
        through `attrs` give it their keys) and inserted by a statement, as `bulk_create` does:
        mapper `before_insert`/`after_insert` events do not run for it.

        The new row is `attrs` over `defaults`: `attrs` win, so the row created is the row
        looked for. A callable in `defaults` is called, once, only when the row is created.

        Raises:
            FieldError: a key of `attrs` or `defaults` is not a mapped attribute (before SQL).
            sqlalchemy.exc.IntegrityError: the insert broke a constraint other than a unique
                one, or a unique one while no row matching `attrs` is visible (for example
                under REPEATABLE READ).
        """
        new_row = self._attrs_over_defaults(attrs, defaults)
        found = self.first(**attrs)
        if found is not None:
            return found
        return self._insert_or_find(new_row(), lambda: self.first(**attrs))[0]

    def create_or_first(self, defaults: Values | None = None, **attrs: Any) -> ModelT:
        """Insert a new object first; on a unique violation return the existing one.

        Cheaper than `first_or_create` when a miss is the common case; a conflict is not an
        error (`ON CONFLICT DO NOTHING`) and never rolls back the caller's other work. Same values
        (`attrs` win over `defaults`; callables in `defaults` are called once, for the INSERT)
        and errors as `first_or_create`.
        """
        new_row = self._attrs_over_defaults(attrs, defaults)
        return self._insert_or_find(new_row(), lambda: self.first(**attrs))[0]

    def get_or_create(self, defaults: Values | None = None, **lookups: Any) -> tuple[ModelT, bool]:
        """Django's `get_or_create`: `(object, created)`.

        Looks the object up with `one(**lookups)`; if absent, creates it from the lookups that
        have no `__` operator with `defaults` over them (as in Django, `defaults` win),
        race-safely as `first_or_create` does. A callable in `defaults` is called, once, only
        when the object is created.

        Raises:
            FieldError: a lookup or a key of `defaults` is unknown (before any SQL).
            MultipleObjectsReturned: more than one row matches the lookups.
        """
        plain = _plain(lookups)
        given = self._values(defaults, {})
        query = self.filter(**lookups)  # validates every lookup before any SQL

        def find() -> ModelT | None:
            try:
                return query.one()
            except DoesNotExist:
                return None

        found = find()
        if found is not None:
            return found, False
        return self._insert_or_find({**plain, **_called(given)}, find)

    def update_or_create(
        self,
        defaults: Values | None = None,
        create_defaults: Values | None = None,
        **lookups: Any,
    ) -> tuple[ModelT, bool]:
        """Django's `update_or_create`: `(object, created)`.

        Looks the row up with `SELECT ... FOR UPDATE` (where the database has it; SQLite relies
        on its database-wide write lock), so concurrent callers update one after the other. If
        found, sets `defaults` on it; if not, creates it from the plain lookups with
        `create_defaults` (or `defaults` when `create_defaults` is None) over them, race-safely
        as `get_or_create` does. As in Django, the defaults win over the lookups, and callables
        in them are called once, only for the values used. All of it runs in a SAVEPOINT: a
        failure rolls back only this call.

        Raises:
            FieldError: a key is not a mapped attribute (before any SQL).
            MultipleObjectsReturned: more than one row matches the lookups.
        """
        plain = _plain(lookups)
        updates = self._values(defaults, {})
        creating = updates if create_defaults is None else self._values(create_defaults, {})
        locked = self.filter(**lookups).statement().with_for_update()
        locked = locked.execution_options(populate_existing=True)

        def find() -> ModelT | None:
            rows = self.session.scalars(locked.limit(2)).all()
            if len(rows) > 1:
                raise MultipleObjectsReturned(
                    f"more than one {self.model.__name__} matches the lookups of update_or_create"
                )
            return rows[0] if rows else None

        self.session.flush()
        # A SAVEPOINT even as the block's first write: the update is a flush, and a failed
        # flush outside one would deactivate the whole session transaction.
        with self.session.begin_nested():
            obj = find()
            created = False
            if obj is None:
                obj, created = self._insert_or_find({**plain, **_called(creating)}, find)
            if not created:
                for name, value in _called(updates).items():
                    setattr(obj, name, value)
                self.session.flush()
        return obj, created

    def _attrs_over_defaults(
        self, attrs: Mapping[str, Any], defaults: Values | None
    ) -> Callable[[], dict[str, Any]]:
        """The new row of first_or_create/create_or_first, checked now, built when called: the
        callables of `defaults` are called then, and only those `attrs` do not override."""
        check_fields(self.model, attrs)
        given = self._values(defaults, {})
        return lambda: {**_called(given, but=attrs), **attrs}

    def _insert_or_find(
        self, given: dict[str, Any], find: Callable[[], ModelT | None]
    ) -> tuple[ModelT, bool]:
        """Insert the row, or, when a concurrent transaction inserted it first, read it.

        `INSERT ... ON CONFLICT DO NOTHING RETURNING` (bulk_create's path, one row): a conflict
        returns no row instead of an error, so nothing aborts and no SAVEPOINT is needed for
        it; one protects earlier writes of the block from the other errors (NOT NULL, foreign
        key) only when there are any. Other databases insert in a SAVEPOINT and catch the
        unique violation.
        """
        if not (
            has_on_conflict(self._dialect()) and insertable_with_on_conflict(self.model, given)
        ):
            return self._insert_in_savepoint_or_find(given, find)
        # Built as an object first: its __init__ and validators run, and related objects set
        # on it (author=ada) give the row its foreign keys, as a flush would.
        created = self.bulk_create([self.model(**given)], ignore_conflicts=True)
        if created:
            return created[0], True
        existing = find()
        if existing is None:
            raise conflict_error(self.model)
        return existing, False

    def _insert_in_savepoint_or_find(
        self, given: dict[str, Any], find: Callable[[], ModelT | None]
    ) -> tuple[ModelT, bool]:
        session = self.session
        # Flush the caller's pending changes first: their errors are theirs, raised outside
        # our savepoint and never mistaken for a conflict on our row.
        session.flush()
        try:
            with session.begin_nested():
                obj = self.model(**given)
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

    def _dialect(self) -> str:
        # Asked only when a value needs it (a wide integer, a string operator on SQLite); a
        # repository lives on one session, so the answer is kept.
        name: str | None = self.__dict__.get("_dialect_name")
        if name is None:
            name = self.__dict__["_dialect_name"] = dialect_name(self.session, self.model)
        return name

    def _check_instance(self, obj: Any) -> None:
        if not isinstance(obj, self.model):
            raise TypeError(f"expected a {self.model.__name__}, got {type(obj).__name__}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.model.__name__}>"


def _plain(lookups: Mapping[str, Any]) -> dict[str, Any]:
    """The lookups that name a field with no operator: the values a new row takes from them."""
    return {key: value for key, value in lookups.items() if "__" not in key}


def _called(defaults: Mapping[str, Any], but: Mapping[str, Any] = {}) -> dict[str, Any]:
    """`defaults` with callables replaced by what they return (Django's `resolve_callables`),
    leaving out the names in `but`, whose values win: a default that is not used is not called."""
    return {
        name: value() if callable(value) else value
        for name, value in defaults.items()
        if name not in but
    }
