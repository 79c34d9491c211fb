"""The plain-row loader of `Query.iterator()`, `Query.first()`, `Repository.get()` and one-row
inserts: the ORM's own steps for a new row, without its per-row generality.

For each row SQLAlchemy's loader runs a general machine (eager loaders, polymorphic dispatch,
deferred columns, load events, `populate_existing`), about 5 µs a row: Django's
`QuerySet.iterator()` streams twice as fast. For a model that uses none of that machine, the
object the ORM makes for a new row is simple: an instance from the class manager, its column
values in `__dict__`, its identity key, entered in the session's identity map (as
`loading._instance` does). `stream()` does exactly that, on the rows of the same SELECT run
on the session's connection, and returns the object already in the identity map where there
is one, loading its unloaded columns from the row as the ORM does. The objects are ordinary
persistent objects of the session: changes to them are flushed, lazy relationships load.

The same loader reads the single row of `first()` and `get()` (`Session.get`'s identity-map
lookup still comes first), and the row a one-row `INSERT ... RETURNING` sends back
(`first_or_create`'s miss), whose parameters it writes as the ORM's bulk INSERT would.

Every other case goes through the ORM: a query with loader options (`select_related`,
`prefetch_related`, `options`), a model with inheritance, a column that is not a plain column of
its table (deferred, `column_property`, `query_expression`), a relationship that is not lazy,
`load`/`refresh` listeners (`@reconstructor`, composites), a nullable primary key, and sessions
with `do_orm_execute` or `loaded_as_persistent` listeners (which may rewrite the statement or
watch each load). There, a collection joined into the rows (`joinedload`) is refused up front:
its parent's rows may span two chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from sqlalchemy import Column, ColumnElement, Table, bindparam, inspect, select
from sqlalchemy.orm import ColumnProperty, RelationshipProperty, Session, SynonymProperty
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.context import QueryContext
from sqlalchemy.orm.instrumentation import ClassManager
from sqlalchemy.orm.loading import _load_on_pk_identity
from sqlalchemy.orm.state import InstanceState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from sqlalchemy import Connection, CursorResult, Select
    from sqlalchemy.orm import Mapper

__all__ = ["plain_inserter", "plain_loader", "stream"]

# The relationship strategies whose loading is done by the class-level lazy loader: the ORM
# does nothing for them per row.
_LAZY_STRATEGIES = frozenset({True, "select", "raise", "raise_on_sql"})
_STATE_ATTR = ClassManager.STATE_ATTR  # where an instance keeps its InstanceState
# A ColumnProperty loaded by the default column loader (not deferred, not raiseload).
_PLAIN_COLUMN = (("deferred", False), ("instrument", True))
# What Session.get passes its loader for a plain get: the default load options, and none of
# these (populate_existing changes the load options; a session's own execution options are
# passed as execution_options).
_DEFAULT_LOAD_OPTIONS = QueryContext.default_load_options
_GET_OPTIONS = ("identity_token", "execution_options", "bind_arguments")
_SCALAR_KEYS = (int, str)


def stream(
    session: Session,
    model: type[Any],
    statement: Select[Any],
    chunk_size: int,
    *,
    eager: bool = False,
) -> Iterator[Any]:
    """The objects of `statement` (a `select(model)`), fetched `chunk_size` rows at a time.

    `eager`: the statement carries loader options, which only the ORM's loader applies.
    Returns a generator: no SQL runs before its first `next()`.

    Raises:
        ValueError: the statement joins a collection into its rows (`joinedload`), which a
            stream cannot split into chunks.
    """
    loader = None if eager else _loader_for(inspect(model))
    if loader is None or not _plain_session(session):
        _check_chunkable(session, model, statement)
        return _orm_stream(session, statement, chunk_size)
    return loader.stream(session, statement, chunk_size)


def _check_chunkable(session: Session, model: type[Any], statement: Select[Any]) -> None:
    """Refuse, before any SQL, what SQLAlchemy would refuse at the first row: yield_per with a
    collection joined into the rows (one object's rows may span two chunks). Compiling the
    statement answers it exactly, mapper defaults (`lazy="joined"`) and nested options
    included; it costs one compilation per stream."""
    dialect = session.get_bind(mapper=inspect(model), clause=statement).dialect
    compile_state = statement.compile(dialect=dialect).compile_state
    if getattr(compile_state, "multi_row_eager_loaders", False):
        raise ValueError(
            f"iterator() cannot stream {model.__name__} objects with a collection joined into "
            "their rows (joinedload, or lazy='joined' on the relationship): one object's rows "
            "may span two chunks. Load collections with prefetch_related(...) or "
            "options(selectinload(...)), one more SELECT per chunk"
        )


def _plain_session(session: Session) -> bool:
    # A listener may rewrite the statement (with_loader_criteria, say) or watch each load; a
    # scoped_session proxy (passed in place of a session) lacks what the loader uses; a
    # subclass may run statements its own way.
    if not isinstance(session, Session) or not _runs_statements_as_sqlalchemy(type(session)):
        return False
    dispatch: Any = session.dispatch
    return not (dispatch.do_orm_execute or dispatch.loaded_as_persistent)


# The Session methods through which the ORM paths run statements. A subclass that overrides
# one (a cache in `get`, a tenant filter in `execute`) must see the repositories' statements,
# so its sessions take the ORM paths, unless the class says its overrides need not see them
# (`_repositories_plain_paths = True`, as the sync session behind uow's AsyncSession does).
_STATEMENT_METHODS = ("get", "execute", "scalars", "scalar")
_session_classes: WeakKeyDictionary[type[Any], bool] = WeakKeyDictionary()


def _runs_statements_as_sqlalchemy(cls: type[Any]) -> bool:
    verdict = _session_classes.get(cls)
    if verdict is None:
        verdict = _session_classes[cls] = bool(
            getattr(cls, "_repositories_plain_paths", False)
        ) or all(getattr(cls, name) is getattr(Session, name) for name in _STATEMENT_METHODS)
    return verdict


def plain_loader(session: Session, model: type[Any]) -> _Loader | None:
    """The loader for one row of `model` read on `session` (`first()`, `get()`), or None where
    the ORM's loader must run: the cases `stream()` leaves to it, and a session with execution
    options of its own (which the ORM applies to every statement)."""
    if not _plain_session(session) or session.execution_options:
        return None
    return _loader_for(inspect(model))


def plain_inserter(session: Session, model: type[Any]) -> _Loader | None:
    """The loader for the row of a one-row INSERT of `model` (`_Loader.insert_one`), or None
    where the ORM must insert it: `plain_loader`'s cases, and a model with a version counter
    (the ORM sets its first value)."""
    loader = plain_loader(session, model)
    if loader is None or loader.mapper.version_id_col is not None:
        return None
    return loader


def _orm_stream(session: Session, statement: Select[Any], chunk_size: int) -> Iterator[Any]:
    yield from session.scalars(statement.execution_options(yield_per=chunk_size))


@dataclass(frozen=True, slots=True)
class _Loader:
    mapper: Mapper[Any]
    keys: tuple[str, ...]
    columns: tuple[ColumnElement[Any], ...]
    identity_class: type[Any]
    primary_key: Callable[[Any], tuple[Any, ...]]
    fill: Callable[[dict[str, Any], Any], None]
    # `SELECT <columns> WHERE <primary key> = :pk_1 AND ...`, for get().
    by_key: Select[Any]
    # Attribute name -> (column key, whether the column's type stores None), for insert_one().
    insert_keys: dict[str, tuple[str, bool]]
    # The column-only form of each kept statement first() ran (repositories.query), and the
    # RETURNING form of each kept INSERT insert_one() ran (repositories._bulk).
    column_forms: WeakKeyDictionary[Any, Any] = field(default_factory=WeakKeyDictionary)

    def stream(self, session: Session, statement: Select[Any], chunk_size: int) -> Iterator[Any]:
        connection, result = self.execute(session, statement, chunk_size)
        identity_map: Any = session.identity_map
        states, get, add = identity_map._dict, identity_map.get, identity_map._add_unpresent
        cls: Any = self.mapper.class_
        manager, session_id = self.mapper.class_manager, session.hash_key
        identity_class, primary_key, fill = self.identity_class, self.primary_key, self.fill
        try:
            for partition in result.partitions():
                for row in partition:
                    key = (identity_class, primary_key(row), None)
                    if key in states:
                        instance = get(key)  # None when it is being garbage-collected
                        if instance is not None:
                            self.load_unloaded(instance, row)
                            yield instance
                            continue
                    # What the ORM's loader does for a row new to the session (with
                    # ClassManager.new_instance inlined: its state setter writes `__dict__`).
                    instance = cls.__new__(cls)
                    state = InstanceState(instance, manager)
                    values = instance.__dict__
                    values[_STATE_ATTR] = state
                    fill(values, row)
                    state.key = key
                    state.session_id = session_id
                    add(state, key)
                    yield instance
        finally:
            # A stream left early must not keep its server-side cursor open. Once the block
            # has ended, the connection may serve another session: leave its cursors alone.
            if not connection.closed:
                result.close()

    def execute(
        self, session: Session, statement: Select[Any], chunk_size: int
    ) -> tuple[Connection, CursorResult[Any]]:
        """Run `statement` for its columns, as `session.execute()` would run it for objects:
        autoflush first, on the connection the session binds the mapper to."""
        session._autoflush()
        rows = statement.with_only_columns(*self.columns)
        bind_arguments = {"mapper": self.mapper, "clause": rows}
        connection = session.connection(bind_arguments=bind_arguments)
        # yield_per: a server-side cursor on PostgreSQL, fetchmany() on SQLite.
        return connection, connection.execute(rows, execution_options={"yield_per": chunk_size})

    def first(self, session: Session, statement: Select[Any], params: Mapping[str, Any]) -> Any:
        """The object of the first row of `statement` (a kept `select(model)`), or None: what
        `session.scalars(statement, params).first()` returns."""
        rows = self.column_forms.get(statement)
        if rows is None:
            rows = self.column_forms[statement] = statement.with_only_columns(*self.columns)
        row = self.execute_one(session, rows, params).first()
        return None if row is None else self.instance(session, row)

    def insert_one(self, session: Session, statement: Any, row: Mapping[str, Any]) -> list[Any]:
        """Run `statement` (an INSERT of the model) for `row` (by attribute name) with RETURNING
        the row's columns, as an ORM bulk INSERT of one row would: the new object in a list, or
        none (a conflict ignored). As the ORM does, a None is left out of the INSERT (the
        column's default applies), unless the column's type stores None as a value (JSON)."""
        returning = self.column_forms.get(statement)
        if returning is None:
            returning = self.column_forms[statement] = statement.returning(*self.columns)
        params = {}
        for name, value in row.items():
            column = self.insert_keys.get(name)
            if column is not None and (value is not None or column[1]):
                params[column[0]] = value
        connection = session.connection(bind_arguments={"mapper": self.mapper})
        inserted = connection.execute(returning, params).first()
        return [] if inserted is None else [self.instance(session, inserted)]

    def get(self, session: Session, pk: Any) -> Any:
        """`session.get(model, pk)`, for a session `plain_loader` accepted.

        An int or str key of a single-column primary key that the identity map does not hold
        goes straight to the SELECT: `Session.get` would only check what `plain_loader`
        checked (no populate_existing, no always_refresh) before it. Any other key goes
        through `Session.get`'s own steps (`_get_impl`: its shape, the identity map, an
        expired object), with `load` for its SELECT.
        """
        if (
            type(pk) in _SCALAR_KEYS
            and len(self.mapper.primary_key) == 1
            and (self.identity_class, (pk,), None) not in session.identity_map
        ):
            return self.select_by_key(session, (pk,))
        return session._get_impl(self.mapper.class_, pk, self.load)

    def load(
        self,
        session: Session,
        statement: Any,
        primary_key_identity: Any,
        **options: Any,
    ) -> Any:
        """A `db_load_fn` for `Session._get_impl` (the SELECT of `Session.get` once the identity
        map had nothing): the plain path for a plain get, the ORM's for anything else."""
        if (
            options.get("load_options") is not _DEFAULT_LOAD_OPTIONS
            or any(options.get(name) for name in _GET_OPTIONS)
            or statement._with_options
        ):
            return _load_on_pk_identity(session, statement, primary_key_identity, **options)
        return self.select_by_key(session, primary_key_identity)

    def select_by_key(self, session: Session, primary_key_identity: Any) -> Any:
        """SELECT the row with this primary key (a sequence in the mapper's key order)."""
        if None in primary_key_identity:
            # The ORM turns a None into IS NULL (and warns): its own path does that.
            return _load_on_pk_identity(session, select(self.mapper), primary_key_identity)
        params = {f"pk_{index}": value for index, value in enumerate(primary_key_identity)}
        row = self.execute_one(session, self.by_key, params).one_or_none()
        return None if row is None else self.instance(session, row)

    def execute_one(
        self, session: Session, rows: Select[Any], params: Mapping[str, Any]
    ) -> CursorResult[Any]:
        """Run `rows` as `session.execute()` runs a statement for objects: autoflush first, on
        the connection the session binds the mapper to."""
        session._autoflush()
        connection = session.connection(bind_arguments={"mapper": self.mapper, "clause": rows})
        return connection.execute(rows, params)

    def instance(self, session: Session, row: Any) -> Any:
        """The object of `row`: the one the identity map holds (its unloaded columns loaded from
        the row), or a new one entered there, as `stream()` makes them."""
        key = (self.identity_class, self.primary_key(row), None)
        identity_map: Any = session.identity_map
        instance = identity_map.get(key)
        if instance is not None:
            self.load_unloaded(instance, row)
            return instance
        cls: Any = self.mapper.class_
        instance = cls.__new__(cls)
        state = InstanceState(instance, self.mapper.class_manager)
        values = instance.__dict__
        values[_STATE_ATTR] = state
        self.fill(values, row)
        state.key = key
        state.session_id = session.hash_key
        identity_map._add_unpresent(state, key)
        return instance

    def load_unloaded(self, instance: Any, row: Any) -> None:
        """Fill in the columns an object already in the session has not loaded (expired by a
        commit, say) from `row`; the loaded ones keep their values, as with the ORM."""
        unloaded = inspect(instance).unloaded
        if unloaded:
            for index, key in enumerate(self.keys):
                if key in unloaded:
                    set_committed_value(instance, key, row[index])


# Per mapper: the `attrs` it was built for (a mapper given a new property has new ones), and
# the loader, or None where the mapper's shape needs the ORM's.
_loaders: WeakKeyDictionary[Mapper[Any], tuple[object, _Loader | None]] = WeakKeyDictionary()


def _loader_for(mapper: Mapper[Any]) -> _Loader | None:
    """The loader for `mapper`, or None where only the ORM's own loader is right."""
    attrs = mapper.attrs  # configures the mappers first
    cached = _loaders.get(mapper)
    if cached is None or cached[0] is not attrs:
        cached = (attrs, _build(mapper) if _plain(mapper) else None)
        _loaders[mapper] = cached
    # Listeners come and go at any time: looked at on every call. `load` covers
    # @reconstructor and composites too.
    dispatch: Any = mapper.class_manager.dispatch
    if dispatch.load or dispatch.refresh:
        return None
    return cached[1]


def _plain(mapper: Mapper[Any]) -> bool:
    table = mapper.local_table
    manager: Any = mapper.class_manager
    if not (
        type(manager) is ClassManager  # not a custom instrumentation
        and manager.STATE_ATTR == _STATE_ATTR
        and isinstance(table, Table)
        and mapper.persist_selectable is table
        and mapper.inherits is None
        and mapper.polymorphic_on is None
        and len(mapper.self_and_descendants) == 1
        and not mapper.always_refresh
        # The ORM skips a row whose primary key is NULL; a key that cannot be NULL spares
        # every row that check.
        and not any(column.nullable for column in mapper.primary_key)
        and {id(column) for column in mapper.primary_key}
        <= {id(column) for prop in mapper.column_attrs for column in prop.columns}
    ):
        return False
    for prop in mapper.attrs:
        if isinstance(prop, ColumnProperty):
            if prop.strategy_key != _PLAIN_COLUMN or len(prop.columns) != 1:
                return False
            column = prop.columns[0]
            if not isinstance(column, Column) or column.table is not table:
                return False
        elif isinstance(prop, RelationshipProperty):
            if prop.lazy not in _LAZY_STRATEGIES:
                return False
        elif not isinstance(prop, SynonymProperty):
            return False
    return True


def _build(mapper: Mapper[Any]) -> _Loader:
    props = list(mapper.column_attrs)
    columns = tuple(prop.columns[0] for prop in props)
    # By identity: == on columns builds SQL.
    position = {id(column): index for index, column in enumerate(columns)}
    positions = [position[id(column)] for column in mapper.primary_key]
    # Both give a tuple, the identity key's shape: a slice of a row is a tuple.
    primary_key: Callable[[Any], tuple[Any, ...]] = (
        itemgetter(slice(positions[0], positions[0] + 1))
        if len(positions) == 1
        else itemgetter(*positions)
    )
    keys = tuple(prop.key for prop in props)
    identity_class = mapper.identity_key_from_primary_key((None,) * len(positions))[0]
    by_key = select(*columns).where(
        *(column == bindparam(f"pk_{index}") for index, column in enumerate(mapper.primary_key))
    )
    insert_keys = {
        prop.key: (column.key, bool(column.type.should_evaluate_none))
        for prop, column in zip(props, columns, strict=True)
    }
    return _Loader(
        mapper, keys, columns, identity_class, primary_key, _filler(keys), by_key, insert_keys
    )


def _filler(keys: Sequence[str]) -> Callable[[dict[str, Any], Any], None]:
    """`fill(d, row)` runs `d["id"], d["email"], ... = row`.

    One unpacking assignment stores a row's values about four times faster than
    `d.update(zip(keys, row))`, which builds a pair per column: a tenth of the time per row
    of a stream. The keys are the mapper's attribute names, written as string literals.
    """
    targets = "".join(f"d[{key!r}], " for key in keys)
    namespace: dict[str, Any] = {}
    exec(f"def fill(d, row):\n    {targets}= row\n", namespace)
    fill: Callable[[dict[str, Any], Any], None] = namespace["fill"]
    return fill
