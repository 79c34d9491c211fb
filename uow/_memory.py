"""`InMemoryDatabase`: units of work and repositories with rows kept in memory, for service tests.

A unit of work over an in-memory database asks it for its session, as over a Database, and gets
a `_MemorySession`: the same transaction face (begin, savepoints, commit, rollback), over a store
of rows that are real, transient instances of the mapped classes. Each annotated repository class
is built as a class derived from it whose base `Repository` methods that need SQL are answered
from the store (`InMemory<Name>(UserRepository, _MemoryRepository)`): the user's own methods
come first in its method order and reach the in-memory ones through the base API.

What a flush does on a database, `_MemorySession.flush` does on the store: it inserts the added
objects (Python-side defaults, autoincrement keys), copies keys from related objects, and checks
the table's NOT NULL, primary key, unique and foreign key constraints, raising
`sqlalchemy.exc.IntegrityError` as a database would. A failed flush does what SQLAlchemy's
session does on a database: it rolls back the innermost savepoint (or the whole transaction) and
leaves it failed until that rollback is issued, so an error caught inside a block commits nothing
(`uow._transactions.aborted`). Transactions and savepoints are snapshots of the column values of
every row; each transaction begins from the values of the last commit, so a change made to a
stored object outside any block is not stored.
Lookups are parsed by `repositories.lookups` (the same checks, the same errors) and evaluated in
Python. No SQL runs: code that needs it gets `InMemorySQLError`.
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast, get_args, get_origin
from weakref import WeakKeyDictionary

from sqlalchemy import ColumnElement, inspect
from sqlalchemy.exc import IntegrityError, InvalidRequestError, PendingRollbackError
from sqlalchemy.orm import QueryableAttribute, RelationshipDirection
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ClauseElement, UnaryExpression

from repositories._bulk import rows_of
from repositories._checks import check_positive_int
from repositories._fields import check_columns, fields_of, mapper_of
from repositories._links import fill_foreign_keys
from repositories._unique import _unique_sets, unique_column
from repositories._upsert import SendOrder, upsert_of
from repositories.async_repository import AsyncRepository
from repositories.errors import MultipleObjectsReturned
from repositories.lookups import EmptyResult, build_conditions, in_values, parse_key
from repositories.query import Query, _primary_key
from repositories.repository import Repository, Values, _called, _plain
from uow._fork import ProcessLocal
from uow._transactions import aborted
from uow.async_database import AsyncDatabase
from uow.database import Database
from uow.errors import UnitOfWorkError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from sqlalchemy import MetaData
    from sqlalchemy.orm import Mapper, RelationshipProperty

    from repositories.lookups import Lookup
    from uow.unit_of_work import _Frame

__all__ = ["AsyncInMemoryDatabase", "InMemoryDatabase", "InMemorySQLError"]

ModelT = TypeVar("ModelT")

# The database the lookups' checks assume: PostgreSQL's bounds (an integer wider than BIGINT
# matches nothing) and its limit on an `in` list, so code that passes in memory passes there.
_DIALECT = "postgresql"


def _dialect() -> str:
    return _DIALECT


class InMemorySQLError(UnitOfWorkError):
    """Code asked an in-memory database for SQL (a raw statement, `session.execute`, a raw
    SQLAlchemy expression in `filter`, `Query.statement()`): it runs none. Test such code on a
    real database (see `db.test_transaction()`)."""


def _no_sql(what: str) -> InMemorySQLError:
    return InMemorySQLError(
        f"{what} needs SQL, and an InMemoryDatabase runs none: it keeps rows in memory and "
        "answers the Repository and Query API (lookups, ordering, get-or-create, bulk_create, "
        "...). Write the method on that API, or test it on a real database"
    )


# -- the schema of a model, as the store enforces it ------------------------------------------


@dataclass(frozen=True, slots=True)
class _ForeignKey:
    local: tuple[str, ...]  # attribute keys of the referring model
    target: type[Any] | None  # the referred model (None: a table no mapped class of ours maps)
    remote: tuple[str, ...]  # attribute keys of the referred model
    ondelete: str | None  # "CASCADE", "SET NULL", or None


@dataclass(frozen=True, slots=True)
class _Schema:
    table: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    autoincrement: str | None
    unique: tuple[tuple[str, ...], ...]
    not_null: tuple[str, ...]
    defaults: Mapping[str, Any]  # key -> ColumnDefault (Python-side)
    sql_defaults: frozenset[str]  # keys whose default only the database computes
    foreign_keys: tuple[_ForeignKey, ...]


_schemas: WeakKeyDictionary[type[Any], _Schema] = WeakKeyDictionary()


def _schema(model: type[Any]) -> _Schema:
    schema = _schemas.get(model)
    if schema is None:
        schema = _schemas[model] = _read_schema(model)
    return schema


def _read_schema(model: type[Any]) -> _Schema:
    mapper = mapper_of(model)
    table: Any = mapper.local_table
    keys: dict[Any, str] = {}
    for column in table.columns:
        try:
            keys[column] = mapper.get_property_by_column(column).key
        except Exception:  # a column the class does not map
            continue
    auto_column = getattr(table, "autoincrement_column", None)
    autoincrement = keys.get(auto_column) if auto_column is not None else None
    defaults: dict[str, Any] = {}
    sql_defaults: set[str] = set()
    not_null: list[str] = []
    for column, key in keys.items():
        default = column.default
        if default is not None and (default.is_scalar or default.is_callable):
            defaults[key] = default
        elif (default is not None or column.server_default is not None) and key != autoincrement:
            sql_defaults.add(key)
        if not column.nullable and key != autoincrement:
            not_null.append(key)
    unique, _partial = _unique_sets(table, plain_columns=True)
    unique_keys = {
        tuple(sorted(keys[column] for column in columns))
        for columns in unique
        if all(column in keys for column in columns)
    }
    foreign_keys = []
    for constraint in table.foreign_key_constraints:
        target = _mapped(mapper, constraint.referred_table)
        if target is None:
            continue
        target_mapper = mapper_of(target)
        local = tuple(keys[column] for column in constraint.columns)
        remote = tuple(
            target_mapper.get_property_by_column(element.column).key
            for element in constraint.elements
        )
        ondelete = (constraint.ondelete or "").upper() or None
        foreign_keys.append(_ForeignKey(local, target, remote, ondelete))
    return _Schema(
        table=str(table.name),
        columns=tuple(fields_of(model).columns),
        primary_key=fields_of(model).primary_key,
        autoincrement=autoincrement,
        unique=tuple(sorted(unique_keys)),
        not_null=tuple(not_null),
        defaults=defaults,
        sql_defaults=frozenset(sql_defaults),
        foreign_keys=tuple(foreign_keys),
    )


def _mapped(mapper: Mapper[Any], table: Any) -> type[Any] | None:
    for other in mapper.registry.mappers:
        if other.local_table is table:
            found: type[Any] = other.class_
            return found
    return None


class _Violation(Exception):  # the driver error an IntegrityError wraps
    """What a database driver would have raised; `sqlstate` as PostgreSQL says it."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _integrity_error(message: str, sqlstate: str) -> IntegrityError:
    return IntegrityError("-- in memory: no SQL ran", None, _Violation(message, sqlstate))


class _DefaultContext:
    """What a callable `default=` taking a context may ask: the row's values."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.current_parameters = values

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        return self.current_parameters


# -- the store ---------------------------------------------------------------------------------

_Snapshot = dict[type[Any], list[tuple[Any, dict[str, Any]]]]


class _Store:
    """The rows of every model, in insertion order, with the operations a flush performs."""

    def __init__(self) -> None:
        self.tables: dict[type[Any], list[Any]] = {}
        self.counters: dict[type[Any], int] = {}
        # The column values of every row at the last commit: each transaction begins from
        # them, so a change made to a stored object outside any block (to a detached object,
        # on a database) is not stored.
        self.committed: _Snapshot = {}

    def rows(self, model: type[Any]) -> list[Any]:
        return self.tables.setdefault(model, [])

    def snapshot(self) -> _Snapshot:
        return {
            model: [
                (obj, {key: obj.__dict__.get(key) for key in _schema(model).columns})
                for obj in rows
            ]
            for model, rows in self.tables.items()
        }

    def restore(self, snapshot: _Snapshot) -> None:
        """Put the rows back as `snapshot` has them: the column values, and the relationships
        changed since (reloaded from the rows, as a database session reloads expired ones)."""
        self.tables = {}
        changed = []
        for model, entries in snapshot.items():
            for obj, values in entries:
                state = obj.__dict__
                for key, value in values.items():
                    if key not in state or state[key] is not value:  # most are as they were
                        set_committed_value(obj, key, value)
                if instance_state(obj).committed_state:  # a relationship set since
                    changed.append(obj)
            self.tables[model] = [obj for obj, _ in entries]
        if changed:
            _Reading(self).load(changed)

    def holds(self, obj: Any) -> bool:
        return any(stored is obj for stored in self.tables.get(type(obj), ()))

    # -- inserting ----------------------------------------------------------------------------

    def insert(self, obj: Any) -> None:
        model = type(obj)
        mapper_of(model)  # a TypeError for an object that is not of a mapped class
        if self.holds(obj):
            return
        schema = _schema(model)
        for prop in mapper_of(model).relationships:
            related = obj.__dict__.get(prop.key)
            many_to_one = prop.direction is RelationshipDirection.MANYTOONE
            cascades = many_to_one and prop.cascade.save_update and related is not None
            if cascades and not self.holds(related):
                self.insert(related)  # the save-update cascade, as a flush does
        state = obj.__dict__
        values = {key: state[key] for key in schema.columns if key in state}
        for key in schema.columns:
            if key in state:
                continue
            default = schema.defaults.get(key)
            if default is not None:
                value = default.arg if default.is_scalar else default.arg(_DefaultContext(values))
                setattr(obj, key, value)
                values[key] = value
            elif key in schema.sql_defaults:
                raise _no_sql(
                    f"{model.__name__}.{key} has a default the database computes (an SQL "
                    "expression or server_default); the row"
                )
        auto = schema.autoincrement
        if auto is not None:
            counter = self.counters.get(model)
            if counter is None:  # like a sequence: never reused, not rolled back
                counter = max([0, *self._keys(model, auto)])
            current = getattr(obj, auto, None)
            if current is None:
                counter = current = counter + 1
                setattr(obj, auto, current)
            self.counters[model] = max(counter, current if isinstance(current, int) else 0)
        self.rows(model).append(obj)

    def _keys(self, model: type[Any], key: str) -> list[int]:
        return [v for obj in self.rows(model) if isinstance(v := getattr(obj, key, None), int)]

    # -- related objects ----------------------------------------------------------------------

    def settle_links(self) -> None:
        """Copy keys from the related objects set since the last flush (`post.author = ada`,
        `ada.posts.append(post)`), as a flush does, and mark those links as flushed."""
        # Collections first, many-to-ones last: `post.author = bob` wins over the backref's
        # removal of the post from its old author's loaded posts.
        for many_to_one in (False, True):
            for model, rows in list(self.tables.items()):
                for prop in mapper_of(model).relationships:
                    if prop.viewonly or prop.secondary is not None:
                        continue
                    if (prop.direction is RelationshipDirection.MANYTOONE) is many_to_one:
                        for obj in list(rows):
                            self._settle(obj, prop)

    def _settle(self, obj: Any, prop: RelationshipProperty[Any]) -> None:
        if prop.key not in obj.__dict__:
            return
        history = inspect(obj).attrs[prop.key].history
        if not history.has_changes():
            return
        value = obj.__dict__[prop.key]
        if prop.direction is RelationshipDirection.MANYTOONE:
            if value is not None and not self.holds(value):
                self.insert(value)
            _copy_keys(prop, value, obj)
        else:
            for child in history.deleted or ():
                if _refers(prop, obj, child):
                    _copy_keys(prop, None, child, reverse=True)
            for child in value or ():
                if not self.holds(child):
                    self.insert(child)
                _copy_keys(prop, obj, child, reverse=True)
        set_committed_value(obj, prop.key, value)

    def related(self, obj: Any, prop: RelationshipProperty[Any]) -> list[Any]:
        """The stored objects `prop` of `obj` refers to, by key (a load, without SQL)."""
        return _Reading(self).related(obj, prop)

    # -- checking -----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise IntegrityError for the first constraint a row breaks, as a database would."""
        # Read from each object's __dict__ (a stored row has every column there): a flush
        # checks every row, and the instrumented attributes cost several times as much.
        for model, rows in self.tables.items():
            schema = _schema(model)
            states = [obj.__dict__ for obj in rows]
            for key in schema.not_null:
                if any(state.get(key) is None for state in states):
                    raise _integrity_error(
                        f"NOT NULL constraint failed: {schema.table}.{key}", "23502"
                    )
            for keys in schema.unique:
                seen: set[tuple[Any, ...]] = set()
                for state in states:
                    values = tuple(state.get(key) for key in keys)
                    if None in values:
                        continue  # NULLs never conflict
                    if values in seen:
                        names = ", ".join(f"{schema.table}.{key}" for key in keys)
                        raise _integrity_error(f"UNIQUE constraint failed: {names}", "23505")
                    seen.add(values)
            for foreign_key in schema.foreign_keys:
                self._check_foreign_key(schema, states, foreign_key)

    def _check_foreign_key(
        self, schema: _Schema, states: list[dict[str, Any]], key: _ForeignKey
    ) -> None:
        if key.target is None or not states:
            return
        present = {
            tuple(target.__dict__.get(name) for name in key.remote)
            for target in self.rows(key.target)
        }
        for state in states:
            values = tuple(state.get(name) for name in key.local)
            if None not in values and values not in present:
                raise _integrity_error(
                    f"FOREIGN KEY constraint failed: {schema.table}"
                    f"({', '.join(key.local)}) = {values!r}",
                    "23503",
                )

    # -- deleting -----------------------------------------------------------------------------

    def remove(self, obj: Any, *, orm: bool) -> None:
        """Delete a stored row: with `orm`, the relationship cascades a Session applies (delete
        or set the children's keys to NULL) first; then the tables' `ondelete` rules."""
        model = type(obj)
        if orm:
            for prop in mapper_of(model).relationships:
                if prop.direction is not RelationshipDirection.ONETOMANY or prop.viewonly:
                    continue
                if prop.secondary is not None:
                    continue
                for child in self.related(obj, prop):
                    if prop.cascade.delete:
                        self.remove(child, orm=True)
                    elif not prop.passive_deletes:
                        _copy_keys(prop, None, child, reverse=True)
        rows = self.rows(model)
        rows[:] = [row for row in rows if row is not obj]
        for other, other_rows in list(self.tables.items()):
            for key in _schema(other).foreign_keys:
                if key.target is not model or key.ondelete not in ("CASCADE", "SET NULL"):
                    continue
                values = tuple(getattr(obj, name, None) for name in key.remote)
                for row in list(other_rows):
                    if tuple(getattr(row, name, None) for name in key.local) != values:
                        continue
                    if key.ondelete == "CASCADE":
                        self.remove(row, orm=False)
                    else:
                        for name in key.local:
                            setattr(row, name, None)


def _copy_keys(
    prop: RelationshipProperty[Any], source: Any, target: Any, *, reverse: bool = False
) -> None:
    """Set `target`'s foreign key columns of `prop` from `source`'s keys (None: to NULL).

    Many-to-one (`reverse` False): `target` is the referring object, `source` the referred one.
    One-to-many (`reverse` True): `source` is the parent, `target` the child."""
    parent_mapper = prop.parent
    related_mapper = prop.mapper
    for local, remote in prop.local_remote_pairs:
        if reverse:  # local: the parent's key; remote: the child's foreign key
            value = None if source is None else _value(source, parent_mapper, local)
            setattr(target, related_mapper.get_property_by_column(remote).key, value)
        else:  # local: the foreign key; remote: the related object's key
            value = None if source is None else _value(source, related_mapper, remote)
            setattr(target, parent_mapper.get_property_by_column(local).key, value)


def _refers(prop: RelationshipProperty[Any], parent: Any, child: Any) -> bool:
    """Whether `child`'s foreign key of the one-to-many `prop` still names `parent`."""
    return all(
        _value(child, prop.mapper, remote) == _value(parent, prop.parent, local)
        for local, remote in prop.local_remote_pairs
    )


def _value(obj: Any, mapper: Mapper[Any], column: Any) -> Any:
    return getattr(obj, mapper.get_property_by_column(column).key, None)


class _Reading:
    """One read of the store: indexes of related rows, built on first use and kept for it."""

    def __init__(self, store: _Store) -> None:
        self.store = store
        self.indexes: dict[RelationshipProperty[Any], dict[tuple[Any, ...], list[Any]]] = {}

    def related(self, obj: Any, prop: RelationshipProperty[Any]) -> list[Any]:
        if prop.secondary is not None:
            raise _no_sql(f"the many-to-many relationship {prop}")
        pairs = prop.local_remote_pairs
        index = self.indexes.get(prop)
        if index is None:
            index = self.indexes[prop] = {}
            for target in self.store.rows(prop.mapper.class_):
                values = tuple(_value(target, prop.mapper, remote) for _, remote in pairs)
                index.setdefault(values, []).append(target)
        values = tuple(_value(obj, prop.parent, local) for local, _ in pairs)
        if None in values:
            return []
        return index.get(values, [])

    def load(self, rows: Iterable[Any]) -> None:
        """Set the relationships of `rows` from the store, as loading them would."""
        for obj in rows:
            for prop in mapper_of(type(obj)).relationships:
                if prop.secondary is not None:
                    continue
                found = self.related(obj, prop)
                if prop.uselist:
                    set_committed_value(obj, prop.key, list(found))
                else:
                    set_committed_value(obj, prop.key, found[0] if found else None)


# -- the session -------------------------------------------------------------------------------


class _MemorySavepoint:
    """A SAVEPOINT of the store: `rollback()` puts the rows back as they were at its start.

    A flush that fails inside it rolls the store back to it at once and leaves it failed, as
    SQLAlchemy's session does on a database: the session refuses every use
    (`PendingRollbackError`), its `commit()` too, until it is rolled back."""

    def __init__(self, session: _MemorySession) -> None:
        self._session = session
        self._snapshot = session._store.snapshot()
        self._closed = False
        self._failure: BaseException | None = None

    def commit(self) -> None:
        if self._failure is not None:
            raise _pending_rollback(self._failure)
        self._session.flush()
        self._session._close_savepoint(self)

    def rollback(self) -> None:
        self._session._restore(self._snapshot)
        self._session._close_savepoint(self)

    def _transaction_is_closed(self) -> bool:
        return self._closed

    def __enter__(self) -> _MemorySavepoint:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._closed:
            return
        if exc_type is not None:
            self.rollback()
            return
        try:
            self.commit()
        except BaseException:
            self.rollback()  # as SQLAlchemy's `with session.begin_nested():` does
            raise


def _pending_rollback(failure: BaseException) -> PendingRollbackError:
    """What SQLAlchemy's session says when used after a failed flush, before its rollback."""
    return PendingRollbackError(
        "This Session's transaction has been rolled back due to a previous exception during "
        "flush. To begin a new transaction with this Session, first issue Session.rollback()."
        f" Original exception was: {failure}",
        code="7s2a",
    )


class _MemorySession:
    """What a unit of work and the repositories use as their session, over the store.

    Its transaction face is the one `UnitOfWorkBase` calls on a SQLAlchemy Session; its data
    face is `add`, `add_all`, `delete`, `flush` and `get`. The rest of a Session runs SQL:
    `execute`, `scalars`, `scalar`, `connection`... raise `InMemorySQLError`. It is its own
    `sync_session`, so an AsyncUnitOfWork takes it as it takes an AsyncSession.
    """

    def __init__(self, store: _Store) -> None:
        self._store = store
        self._begun: _Snapshot | None = None
        self._failure: BaseException | None = None  # a failed flush rolled the transaction back
        self._savepoints: list[_MemorySavepoint] = []  # the open ones, innermost last
        self._pending: list[Any] = []
        self._retired = False
        self._attached = False  # whether the stored objects belong to this session

    @property
    def sync_session(self) -> _MemorySession:
        """This session: the async face runs the same in-memory code."""
        return self

    # -- transactions ---------------------------------------------------------------------------

    def in_transaction(self) -> bool:
        return self._begun is not None

    def begin(self) -> None:
        if self._retired:  # what a database's retired session says (uow.session.Session)
            raise UnitOfWorkError(
                "this session belonged to a `with uow:` block that has ended: repositories, "
                "queries and uow.session are only usable inside their block. Use them inside "
                "`with uow:` (get uow.users again in the new block)"
            )
        store = self._store
        if not self._attached:  # a new session loads what was committed, nothing else
            store.restore(store.committed)
            self._attached = True
        # After a commit of this session, its objects stay attached: changes made to them
        # since are its own, for its next flush (a rollback undoes them).
        self._begun = store.committed

    def begin_nested(self) -> _MemorySavepoint:
        self.flush()
        savepoint = _MemorySavepoint(self)
        self._savepoints.append(savepoint)
        return savepoint

    def commit(self) -> None:
        if self._failure is not None:
            # What the unit of work says on a database (uow.unit_of_work._commit).
            raise aborted(self._failure) from self._failure
        self.flush()
        self._close_savepoints(0)
        self._store.committed = self._store.snapshot()
        self._begun = None

    def rollback(self) -> None:
        self._pending.clear()
        if self._begun is not None:
            self._store.restore(self._begun)
        self._begun = None
        self._failure = None
        self._close_savepoints(0)

    def close(self) -> None:
        self.rollback()
        self._attached = False

    def get_transaction(self) -> None:
        return None

    def _retire(self) -> None:
        self.rollback()
        self._retired = True

    def _restore(self, snapshot: _Snapshot) -> None:
        self._pending.clear()
        self._store.restore(snapshot)

    def _close_savepoint(self, savepoint: _MemorySavepoint) -> None:
        """Close `savepoint` and the ones opened inside it, as SQLAlchemy closes them."""
        for index, open_ in enumerate(self._savepoints):
            if open_ is savepoint:
                self._close_savepoints(index)
                return
        savepoint._closed = True

    def _close_savepoints(self, start: int) -> None:
        for savepoint in self._savepoints[start:]:
            savepoint._closed = True
        del self._savepoints[start:]

    def _check_usable(self) -> None:
        """Raise PendingRollbackError after a failed flush, until the rollback it calls for."""
        failure = self._savepoints[-1]._failure if self._savepoints else self._failure
        if failure is not None:
            raise _pending_rollback(failure)

    # -- data -------------------------------------------------------------------------------

    def add(self, obj: Any) -> None:
        """Insert `obj` at the next flush."""
        mapper_of(type(obj))
        if not self._store.holds(obj) and all(p is not obj for p in self._pending):
            self._pending.append(obj)

    def add_all(self, objs: Iterable[Any]) -> None:
        """Insert the objects at the next flush."""
        for obj in objs:
            self.add(obj)

    def delete(self, obj: Any) -> None:
        """Delete a stored object (and apply the relationship cascades)."""
        self.flush()
        if not self._store.holds(obj):
            raise InvalidRequestError(f"Instance '{obj!r}' is not persisted")
        self._store.remove(obj, orm=True)

    def flush(self) -> None:
        """Insert the added objects and check every constraint, raising IntegrityError for a
        broken one.

        A failed flush does what SQLAlchemy's session does on a database: it rolls back the
        innermost savepoint, or the whole transaction outside any, and leaves it failed, so
        that the session raises `PendingRollbackError` until that rollback is issued (leaving
        a nested block does it), and the commit of a failed transaction raises the
        `UnitOfWorkError` a unit of work raises on a database, committing nothing."""
        if self._begun is None:
            self.begin()
        self._check_usable()
        try:
            pending, self._pending = self._pending, []
            for obj in pending:
                self._store.insert(obj)
            self._store.settle_links()
            self._store.check()
        except BaseException as error:
            if self._savepoints:
                savepoint = self._savepoints[-1]
                self._restore(savepoint._snapshot)
                savepoint._failure = error
            else:
                self._restore(cast("_Snapshot", self._begun))
                self._failure = error
            raise

    def get(self, model: type[ModelT], pk: Any) -> ModelT | None:
        """The stored object with this primary key (a value, a tuple or a dict), or None."""
        self.flush()
        names = fields_of(model).primary_key
        if isinstance(pk, dict):
            wanted = tuple(pk.get(name) for name in names)
        elif isinstance(pk, tuple | list):
            wanted = tuple(pk)
        else:
            wanted = (pk,)
        for obj in self._store.rows(model):
            if tuple(getattr(obj, name) for name in names) == wanted:
                _Reading(self._store).load([obj])
                found: ModelT = obj
                return found
        return None

    # -- the seed helpers of uow.Session ---------------------------------------------------------

    def _repository(self, model: type[ModelT]) -> _MemoryRepository[ModelT]:
        return _MemoryRepository(cast("Any", self), model)

    def all(self, model: type[ModelT], /, **lookups: Any) -> list[ModelT]:
        """Shortcut for `Repository(session, model).all(**lookups)`, in memory."""
        return self._repository(model).all(**lookups)

    def first(self, model: type[ModelT], /, **lookups: Any) -> ModelT | None:
        """Shortcut for `Repository(session, model).first(**lookups)`, in memory."""
        return self._repository(model).first(**lookups)

    def create(self, model: type[ModelT], data: Values | None = None, /, **attrs: Any) -> ModelT:
        """Shortcut for `Repository(session, model).create(data, **attrs)`, in memory."""
        return self._repository(model).create(data, **attrs)

    def first_or_create(
        self, model: type[ModelT], /, defaults: Values | None = None, **attrs: Any
    ) -> ModelT:
        """Shortcut for `Repository(session, model).first_or_create(...)`, in memory."""
        return self._repository(model).first_or_create(defaults, **attrs)

    def create_or_first(
        self, model: type[ModelT], /, defaults: Values | None = None, **attrs: Any
    ) -> ModelT:
        """Shortcut for `Repository(session, model).create_or_first(...)`, in memory."""
        return self._repository(model).create_or_first(defaults, **attrs)

    def expunge(self, obj: Any) -> None:
        """Nothing to do: stored objects belong to no SQLAlchemy session."""

    def expire(self, obj: Any, attribute_names: Iterable[str] | None = None) -> None:
        """Nothing to do: the stored objects are the rows."""

    def refresh(self, obj: Any, attribute_names: Iterable[str] | None = None) -> None:
        """Nothing to do: the stored objects are the rows."""

    # -- SQL ----------------------------------------------------------------------------------

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Raises InMemorySQLError: no SQL runs in memory."""
        raise _no_sql("session.execute()")

    def scalars(self, *args: Any, **kwargs: Any) -> Any:
        """Raises InMemorySQLError: no SQL runs in memory."""
        raise _no_sql("session.scalars()")

    def scalar(self, *args: Any, **kwargs: Any) -> Any:
        """Raises InMemorySQLError: no SQL runs in memory."""
        raise _no_sql("session.scalar()")

    def connection(self, *args: Any, **kwargs: Any) -> Any:
        """Raises InMemorySQLError: no SQL runs in memory."""
        raise _no_sql("session.connection()")

    def get_bind(self, *args: Any, **kwargs: Any) -> Any:
        """Raises InMemorySQLError: there is no engine."""
        raise _no_sql("session.get_bind()")

    def query(self, *args: Any, **kwargs: Any) -> Any:
        """Raises InMemorySQLError: no SQL runs in memory."""
        raise _no_sql("session.query()")

    def __repr__(self) -> str:
        return "<in-memory session>"


def _session(query_or_repository: Any) -> _MemorySession:
    session: _MemorySession = query_or_repository._session
    return session


# -- queries -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Test:
    """One lookup, evaluated on an object: the `WHERE` condition `build_conditions` makes."""

    lookup: Lookup
    value: Any

    def __call__(self, obj: Any, reading: _Reading) -> bool:
        objs = [obj]
        for prop in self.lookup.path:  # EXISTS through each step: any related object matches
            objs = [related for one in objs for related in reading.related(one, prop)]
        return any(self._final(one, reading) for one in objs)

    def _final(self, obj: Any, reading: _Reading) -> bool:
        lookup, value = self.lookup, self.value
        if not lookup.relationship:
            return _matches(lookup.op, getattr(obj, lookup.name, None), value)
        prop = fields_of(lookup.model).relationships[lookup.name]
        if lookup.op == "isnull":
            return bool((not reading.related(obj, prop)) == value)
        if value is None:
            return not reading.related(obj, prop)
        return all(
            _value(obj, prop.parent, local) == _value(value, prop.mapper, remote)
            for local, remote in prop.local_remote_pairs
        )


@dataclass(frozen=True, slots=True)
class _Not:
    """`exclude(...)`: rows for which the lookups are not all true (NULL counts as not)."""

    tests: tuple[_Test, ...]

    def __call__(self, obj: Any, reading: _Reading) -> bool:
        return not all(test(obj, reading) for test in self.tests)


def _matches(op: str, field: Any, value: Any) -> bool:
    """`field <op> value` as SQL answers it: a NULL field matches only `isnull` (and `exact`
    with None, which is `IS NULL`)."""
    if op == "isnull":
        return bool((field is None) == value)
    if field is None:
        return op in ("exact", "iexact") and value is None
    if op == "exact":
        return value is not None and bool(field == value)
    if op == "iexact":
        return value is not None and str(field).lower() == value.lower()
    if op in _TEXT:
        return _TEXT[op](str(field), value)
    if op == "in":
        return any(field == item for item in value if item is not None)
    if op == "range":
        return bool(value[0] <= field <= value[1])
    return bool(_ORDER[op](field, value))


_TEXT: Mapping[str, Callable[[str, str], bool]] = {
    "contains": lambda field, text: text in field,
    "startswith": lambda field, text: field.startswith(text),
    "endswith": lambda field, text: field.endswith(text),
    "icontains": lambda field, text: text.lower() in field.lower(),
    "istartswith": lambda field, text: field.lower().startswith(text.lower()),
    "iendswith": lambda field, text: field.lower().endswith(text.lower()),
}
_ORDER: Mapping[str, Callable[[Any, Any], Any]] = {
    "gt": operators.gt,
    "gte": operators.ge,
    "lt": operators.lt,
    "lte": operators.le,
}


def _tests(model: type[Any], lookups: Mapping[str, Any]) -> tuple[_Test, ...]:
    """The lookups as tests, checked by `build_conditions` (the same errors, in the same order,
    as on a database). Raises EmptyResult when one can match nothing (`in=[]`)."""
    tests = []
    empty = False
    for key, value in lookups.items():
        lookup = parse_key(model, key)
        if lookup.op == "in" and not lookup.relationship:
            value = in_values(value)
        try:
            build_conditions(model, {key: value}, _dialect)
        except EmptyResult:
            empty = True  # keep checking the other keys
        tests.append(_Test(lookup, value))
    if empty:
        raise EmptyResult
    return tuple(tests)


def _sort_key(model: type[Any], item: Any) -> tuple[str, bool]:
    """An ordering of the query as (attribute, descending)."""
    descending = False
    element = item
    if isinstance(item, UnaryExpression) and item.modifier in (
        operators.desc_op,
        operators.asc_op,
    ):
        descending = item.modifier is operators.desc_op
        element = item.element
    key = getattr(element, "key", None)
    if isinstance(element, ColumnElement | QueryableAttribute) and key in fields_of(model).columns:
        return str(key), descending
    raise _no_sql(f"ordering by {item}")


def _ordered(model: type[Any], rows: list[Any], order: tuple[Any, ...]) -> list[Any]:
    keys = [_sort_key(model, item) for item in order]
    for key, descending in reversed(keys):  # stable sorts, last key first
        # PostgreSQL's order: NULLs last ascending, first descending.
        rows = sorted(
            rows,
            key=lambda obj, key=key: (getattr(obj, key) is None, getattr(obj, key)),  # type: ignore[misc]
            reverse=descending,
        )
    return rows


class _MemoryQuery(Query[ModelT]):
    """A `Query` answered from the store: `_where` holds `_Test`s, not SQL conditions."""

    __slots__ = ()

    def _copy(self, **changes: Any) -> Query[ModelT]:
        query = super()._copy(**changes)
        # Same slots, no state of its own: the copy becomes an in-memory query too.
        query.__class__ = type(self)
        return query

    def _dialect(self) -> str:
        return _DIALECT

    def filter(self, *expressions: Any, **lookups: Any) -> Query[ModelT]:
        """See [`Query.filter`][repositories.Query.filter]; raw expressions need SQL."""
        self._check_unsliced("filter")
        if expressions:
            raise _no_sql("a raw SQLAlchemy expression in filter()")
        try:
            tests = _tests(self._model, lookups)
        except EmptyResult:
            return self._copy(empty=True)
        return self._copy(where=(*self._where, *tests))

    def exclude(self, *expressions: Any, **lookups: Any) -> Query[ModelT]:
        """See [`Query.exclude`][repositories.Query.exclude]; raw expressions need SQL."""
        self._check_unsliced("exclude")
        if expressions:
            raise _no_sql("a raw SQLAlchemy expression in exclude()")
        try:
            tests = _tests(self._model, lookups)
        except EmptyResult:
            return self
        if not tests:
            return self
        return self._copy(where=(*self._where, _Not(tests)))

    def statement(self) -> Any:
        """Raises InMemorySQLError: an in-memory query has no SQL statement."""
        raise _no_sql("Query.statement()")

    def _matching(self, load: bool = True) -> list[ModelT]:
        if self._nothing():
            return []
        session = _session(self)
        session.flush()  # autoflush, as a database session does before a query
        reading = _Reading(session._store)
        where = cast("tuple[Any, ...]", self._where)
        rows = [
            obj
            for obj in session._store.rows(self._model)
            if all(test(obj, reading) for test in where)
        ]
        rows = _ordered(self._model, rows, self._order)
        stop = None if self._limit is None else self._offset + self._limit
        rows = rows[self._offset : stop]
        if load:
            reading.load(rows)
        return rows

    def all(self) -> list[ModelT]:
        """See [`Query.all`][repositories.Query.all]."""
        return self._matching()

    def first(self) -> ModelT | None:
        """See [`Query.first`][repositories.Query.first]."""
        query = self if self._order else self._copy(order=_primary_key(self._model))
        rows = cast("_MemoryQuery[ModelT]", query[:1])._matching()
        return rows[0] if rows else None

    def count(self) -> int:
        """See [`Query.count`][repositories.Query.count]."""
        return len(self._matching(load=False))

    def exists(self) -> bool:
        """See [`Query.exists`][repositories.Query.exists]."""
        return bool(self._matching(load=False))

    def iterator(self, chunk_size: int = 1000) -> Iterator[ModelT]:
        """See [`Query.iterator`][repositories.Query.iterator]."""
        check_positive_int("chunk_size", chunk_size)
        return _later(self._matching)

    def update(self, **values: Any) -> int:
        """See [`Query.update`][repositories.Query.update]."""
        self._check_unsliced("update")
        check_columns(self._model, values)
        for value in values.values():
            if isinstance(value, ClauseElement):
                raise _no_sql("an SQL expression in Query.update()")
        if self._empty or not values:
            return 0
        rows = self._matching(load=False)
        for obj in rows:
            for name, value in values.items():
                set_committed_value(obj, name, value)
        _session(self).flush()
        return len(rows)

    def delete(self) -> int:
        """See [`Query.delete`][repositories.Query.delete]."""
        self._check_unsliced("delete")
        if self._empty:
            return 0
        rows = self._matching(load=False)
        session = _session(self)
        for obj in rows:
            session._store.remove(obj, orm=False)
        session.flush()
        return len(rows)

    def __repr__(self) -> str:
        return f"<in-memory Query of {self._model.__name__}>"


def _later(rows: Callable[[], list[ModelT]]) -> Iterator[ModelT]:
    yield from rows()  # runs at the first next(), as the database's stream does


# -- repositories ------------------------------------------------------------------------------


class _MemoryRepository(Repository[ModelT]):
    """The base Repository methods that need SQL, answered from the store. Placed after the
    user's repository class in the built class's method order, so its overrides come first."""

    def query(self) -> Query[ModelT]:
        """See [`Repository.query`][repositories.Repository.query]."""
        return _MemoryQuery(cast("Any", self.session), self.model)

    def _dialect(self) -> str:
        return _DIALECT

    def in_bulk(self, ids: Iterable[Any], field_name: str = "id") -> dict[Any, ModelT]:
        """See [`Repository.in_bulk`][repositories.Repository.in_bulk]."""
        unique_column(self.model, field_name)
        wanted = set(ids)
        found: dict[Any, ModelT] = {}
        for obj in self.query().all():
            value = getattr(obj, field_name)
            if value in wanted:
                found[value] = obj
        return found

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
        """See [`Repository.bulk_create`][repositories.Repository.bulk_create]."""
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
        if upsert is not None:
            SendOrder.of(rows, upsert)  # ValueError for two items with the same unique values
        session = cast("_MemorySession", self.session)
        session.flush()
        fill_foreign_keys(related)
        created: list[ModelT] = []
        with session.begin_nested():  # all or nothing
            for row in rows:
                obj = self.model(**row)
                if upsert is not None:
                    key = {name: row.get(name) for name in upsert.unique_fields}
                    existing = None if None in key.values() else self.first(**key)
                    if existing is not None:
                        self._upsert(existing, row, upsert.update_fields)
                        obj = existing
                if ignore_conflicts:
                    try:
                        with session.begin_nested():  # a conflict skips this row only
                            session.add(obj)
                    except IntegrityError as error:
                        if not _is_unique(error):
                            raise
                        continue
                session.add(obj)
                created.append(obj)
            session.flush()
        return created if return_objects else []

    def _upsert(self, obj: ModelT, row: Mapping[str, Any], names: Iterable[str]) -> None:
        schema = _schema(self.model)
        for name in names:
            if name in row:
                value = row[name]
            else:  # what an insert would have stored
                default = schema.defaults.get(name)
                value = (
                    None
                    if default is None
                    else (
                        default.arg
                        if default.is_scalar
                        else default.arg(_DefaultContext(dict(row)))
                    )
                )
            setattr(obj, name, value)
        cast("_MemorySession", self.session).flush()

    def update_or_create(
        self,
        defaults: Values | None = None,
        create_defaults: Values | None = None,
        **lookups: Any,
    ) -> tuple[ModelT, bool]:
        """See [`Repository.update_or_create`][repositories.Repository.update_or_create]."""
        plain = _plain(lookups)
        updates = self._values(defaults, {})
        creating = updates if create_defaults is None else self._values(create_defaults, {})
        query = self.filter(**lookups)  # validates every lookup first

        def find() -> ModelT | None:
            rows = query[:2].all()
            if len(rows) > 1:
                raise MultipleObjectsReturned(
                    f"more than one {self.model.__name__} matches the lookups of update_or_create"
                )
            return rows[0] if rows else None

        session = cast("_MemorySession", self.session)
        session.flush()
        with session.begin_nested():
            obj = find()
            created = False
            if obj is None:
                obj, created = self._insert_or_find({**plain, **_called(creating)}, find)
            if not created:
                for name, value in _called(updates).items():
                    setattr(obj, name, value)
                session.flush()
        return obj, created

    def _insert_or_find(
        self, given: dict[str, Any], find: Callable[[], ModelT | None]
    ) -> tuple[ModelT, bool]:
        session = cast("_MemorySession", self.session)
        session.flush()  # the caller's pending changes: their errors are theirs
        obj = self.model(**given)
        try:
            with session.begin_nested():
                session.add(obj)
                session.flush()
        except IntegrityError as error:
            if not _is_unique(error):
                raise
            existing = find()
            if existing is None:
                raise
            return existing, False
        return obj, True


def _is_unique(error: IntegrityError) -> bool:
    return getattr(error.orig, "sqlstate", None) == "23505"


_built: WeakKeyDictionary[type[Any], type[Any]] = WeakKeyDictionary()


def _memory_class(cls: type[Any]) -> type[Any]:
    """`cls` with the in-memory methods under the user's own:
    `InMemory<Name>(cls, _MemoryRepository)`."""
    built = _built.get(cls)
    if built is None:
        bases = (_MemoryRepository,) if cls is Repository else (cls, _MemoryRepository)
        built = _built[cls] = type(f"InMemory{cls.__name__}", bases, {"__module__": cls.__module__})
    return built


# -- the databases -----------------------------------------------------------------------------

_ids = itertools.count(1)


class _AsyncMemorySession:
    """What an AsyncUnitOfWork (`uow.session`, `adb.s()`) gets in memory: an AsyncSession's
    face over a `_MemorySession`, whose methods it awaits as the async face awaits the sync
    code; its SQL methods raise `InMemorySQLError` as the sync session's do."""

    def __init__(self, session: _MemorySession) -> None:
        self.sync_session = session

    def add(self, obj: Any) -> None:
        """See `_MemorySession.add` (not awaited, as on an AsyncSession)."""
        self.sync_session.add(obj)

    def add_all(self, objs: Iterable[Any]) -> None:
        """See `_MemorySession.add_all` (not awaited, as on an AsyncSession)."""
        self.sync_session.add_all(objs)

    async def flush(self) -> None:
        """See `_MemorySession.flush`."""
        self.sync_session.flush()

    async def delete(self, obj: Any) -> None:
        """See `_MemorySession.delete`."""
        self.sync_session.delete(obj)

    async def get(self, model: type[ModelT], pk: Any) -> ModelT | None:
        """See `_MemorySession.get`."""
        return self.sync_session.get(model, pk)

    async def close(self) -> None:
        """Roll back what was not committed."""
        self.sync_session.close()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.sync_session, name)  # execute, scalars...: InMemorySQLError
        if name not in _SEED_HELPERS:
            return attribute

        async def awaited(*args: Any, **kwargs: Any) -> Any:
            return attribute(*args, **kwargs)

        return awaited

    def __repr__(self) -> str:
        return "<in-memory async session>"


_SEED_HELPERS = frozenset({"all", "first", "create", "first_or_create", "create_or_first"})


class _MemoryScoped:
    """`db.s` of an in-memory database: one session per context, as `ScopedSession` keeps."""

    def __init__(self, store: _Store, name: str) -> None:
        self._store = store
        self._sessions: ProcessLocal[Any] = ProcessLocal(name, None)

    def __call__(self) -> Any:
        session = self._sessions.get()
        if session is None:
            session = self._facade(_MemorySession(self._store))
            self._sessions.set(session)
        return session

    def _facade(self, session: _MemorySession) -> Any:
        return session

    def _forget(self) -> None:
        """Forget this context's session without closing it (a copied context's)."""
        self._sessions.set(None)

    def _remove_now(self) -> None:
        session = self._sessions.get()
        if session is not None:
            session.sync_session.close()
            self._sessions.set(None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self(), name)  # db.s.create(User, ...), as ScopedSession proxies

    def scope(self) -> nullcontext[None]:
        """Nothing to close at the end of a scope (`with` or `async with`): sessions hold no
        connection."""
        return nullcontext()


class _SyncScoped(_MemoryScoped):
    def remove(self) -> None:
        """Close and forget this context's session."""
        self._remove_now()


class _AsyncScoped(_MemoryScoped):
    def _facade(self, session: _MemorySession) -> Any:
        return _AsyncMemorySession(session)

    async def remove(self) -> None:
        """Close and forget this context's session (awaited, as `AsyncScopedSession.remove`)."""
        self._remove_now()


class _Memory:
    """What both in-memory databases are: a store, a session per context, a frame stack."""

    _store: _Store

    def _start(self, scoped: type[_MemoryScoped]) -> None:
        number = next(_ids)
        self._store = _Store()
        self.s = cast("Any", scoped(self._store, f"uow_memory_session_{number}"))
        self._frames: ProcessLocal[tuple[_Frame, ...]] = ProcessLocal(
            f"uow_memory_stack_{number}", ()
        )

    def _build_repository(self, annotation: Any, facade: Any) -> Any:
        """The unit of work's hook: build the repository `annotation` names, in memory."""
        origin = get_origin(annotation) or annotation
        args = get_args(annotation)
        model = args[0] if args else None
        if issubclass(origin, AsyncRepository):
            repository = origin(facade, model)
            # The async face runs the sync in-memory repository, as it runs the sync one.
            repository.sync = _MemoryRepository(facade.sync_session, repository.model)
            return repository
        return _memory_class(origin)(facade, model)

    def rows(self, model: type[ModelT]) -> list[ModelT]:
        """The committed and pending rows of `model`, in insertion order: a copy, to look at
        in a test's assertions."""
        return list(self._store.rows(model))

    def __getattr__(self, name: str) -> Any:
        if name in ("engine", "Session", "url", "lazy_begin"):
            raise _no_sql(f"db.{name}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


class InMemoryDatabase(_Memory, Database):
    """A Database that keeps rows in memory: for unit tests of services, without SQL.

    Any `UnitOfWork` subclass takes it in place of a Database, and its repositories (generic
    `Repository[Model]` and your subclasses, whose methods are written on the base API) run
    against rows held in memory: lookups (`author__email__iexact=...`), `exclude`, `order_by`,
    slicing, `first/one/all/count/exists`, `get`, `paginate`, `iterator`, `in_bulk`, the
    get-or-create family, `create/update/delete`, `bulk_create`, `Query.update/delete`.
    Objects are instances of your mapped classes; autoincrement keys and Python-side
    `default=` values are filled in; the tables' NOT NULL, primary key, unique and foreign key
    constraints are checked when a database would (at each flush), raising
    `sqlalchemy.exc.IntegrityError`. Blocks commit, roll back and nest (savepoints) as on a
    database, and `on_commit` callbacks run after the outermost commit. A failed flush rolls
    back as on a database: inside a nested block, to its savepoint (the block then raises
    `PendingRollbackError`); in the outermost block, the whole transaction, whose commit then
    raises `UnitOfWorkError` and stores nothing, even if the `IntegrityError` was caught.

    The objects a block hands out are the stored rows themselves (a database session would load
    fresh ones): the same object in every block. A change made to one after its block has
    ended is not stored (as on a detached object), and is undone on that object when the next
    transaction begins, where a detached object would keep it.

    No SQL runs: a method that needs it (`self.session.execute(...)`, a raw SQLAlchemy
    expression in `filter`, `statement()`) raises
    [`InMemorySQLError`][uow.testing.InMemorySQLError]. Ordering follows PostgreSQL (NULLs
    last ascending) and integer bounds too. Many-to-many relationships (`secondary=`), SQL
    defaults and expression indexes are not simulated. One database per test: it is cheap.

    Examples:
        ```python
        db = InMemoryDatabase()
        uow = AppUnitOfWork(db)
        with uow:
            uow.users.create(email="ada@example.com", name="Ada", age=36)
        with uow:
            assert [u.name for u in uow.users.adults()] == ["Ada"]
        ```
    """

    def __init__(self) -> None:
        self._start(_SyncScoped)

    def create_all(self, metadata: MetaData) -> None:
        """Nothing to create: tables exist as soon as a row is stored."""

    def drop_all(self, metadata: MetaData) -> None:
        """Forget the rows of the tables of `metadata`."""
        tables = set(metadata.tables.values())
        store = self._store
        for model in {*store.tables, *store.committed}:
            if mapper_of(model).local_table in tables:
                store.tables.pop(model, None)
                store.committed.pop(model, None)

    def dispose(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        return "<InMemoryDatabase>"


class AsyncInMemoryDatabase(_Memory, AsyncDatabase):
    """[`InMemoryDatabase`][uow.testing.InMemoryDatabase] for an `AsyncUnitOfWork`.

    The same store and the same code: the async repositories run the sync in-memory ones
    through the greenlet bridge, as they run the sync repositories on a database.

    Examples:
        ```python
        import asyncio

        from repositories import AsyncRepository
        from uow import AsyncUnitOfWork


        class AsyncAppUnitOfWork(AsyncUnitOfWork):
            users: AsyncRepository[User]


        async def main() -> None:
            uow = AsyncAppUnitOfWork(AsyncInMemoryDatabase())
            async with uow:
                await uow.users.create(email="ada@example.com", name="Ada")
            async with uow:
                assert await uow.users.count() == 1


        asyncio.run(main())
        ```
    """

    def __init__(self) -> None:
        self._start(_AsyncScoped)

    async def create_all(self, metadata: MetaData) -> None:
        """Nothing to create: tables exist as soon as a row is stored."""

    async def drop_all(self, metadata: MetaData) -> None:
        """Forget the rows of the tables of `metadata`."""
        InMemoryDatabase.drop_all(cast("Any", self), metadata)

    async def dispose(self) -> None:
        """Nothing to close."""

    def __repr__(self) -> str:
        return "<AsyncInMemoryDatabase>"
