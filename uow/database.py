"""`Database`: the engine, the session factory and the context-local session of one database."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from math import inf
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import sessionmaker

from repositories._connection import BEGIN_STATEMENT, BEGUN, LAZY
from repositories._dialects import SQLITE_BUSY_TIMEOUT
from uow import _begin, _fork, _liveness, _pooling, _sqlite, _transactions
from uow._fork import ProcessLocal
from uow._scoped import ScopedSession
from uow._urls import resolve_url
from uow.errors import UnitOfWorkError
from uow.session import Session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from contextlib import AbstractContextManager

    from sqlalchemy.engine import Connection, Engine

    from uow._sqlite import TransactionMode
    from uow.unit_of_work import _Frame

__all__ = ["Database"]

_ids = itertools.count(1)
E = TypeVar("E")  # an Engine or an AsyncEngine


class Database:
    """One database: its engine, a session factory and the context-local session `db.s`.

    Creating a Database opens no connection. Sessions it makes use `expire_on_commit=False` by
    default: objects loaded in a unit of work keep their loaded attributes after the commit, so
    they can be turned into pydantic schemas (or returned from a service) once the block has
    closed, without a `DetachedInstanceError` or a SELECT per object. Pass
    `session_options={"expire_on_commit": True}` to get SQLAlchemy's default back.

    Every SQLite engine gets working SAVEPOINTs and enforced foreign keys; file databases also
    get WAL and a 30 s busy timeout. Transactions on SQLite begin with `BEGIN IMMEDIATE` by
    default (`sqlite_transaction_mode`), so concurrent writers queue on the database lock instead
    of failing with "database is locked" when a read turns into a write. Every engine is made
    safe across `os.fork()`: a child process drops the inherited pool without closing the
    parent's connections.

    Transactions begin lazily (`lazy_begin`, on by default for PostgreSQL with psycopg or
    asyncpg and for SQLite): the statements of a transaction that has not written yet run
    without an open server transaction, and BEGIN is sent just before its first write. A
    read-only block sends only its SELECTs (no BEGIN, no COMMIT), and on SQLite never takes
    the write lock. Reads then see committed data statement by statement, exactly as READ
    COMMITTED already does inside a transaction; on SQLite too, so a read-modify-write block
    reads with `select_for_update()`, which begins the transaction (and takes the write lock)
    before its SELECT. With an `isolation_level` of
    `"REPEATABLE READ"` or `"SERIALIZABLE"` in `engine_options` (reads must share one
    snapshot), or `lazy_begin=False`, BEGIN is eager.

    Server databases (all but SQLite) replace a pooled connection that its server ended (a
    restart, a failover, a killed backend) when it is checked out, so the unit of work after a
    restart succeeds. They ping only a connection whose socket shows the server said something,
    so a healthy checkout costs no round trip; `engine_options={"pool_pre_ping": True}` pings
    at every checkout instead, and `{"pool_pre_ping": False}` checks nothing.

    Args:
        url: a SQLAlchemy URL, e.g. `"sqlite:///app.db"` or `"postgresql+psycopg://..."`. A
            PostgreSQL URL as hosting providers write it (`postgres://...`, or `postgresql://`
            without a driver) gets the installed driver: psycopg (3), else psycopg2, else pg8000.
        engine_options: keyword arguments for `sqlalchemy.create_engine` (copied, never mutated).
        session_options: keyword arguments for the `sessionmaker` (copied, never mutated).
        sqlite_transaction_mode: how SQLite transactions begin: `"IMMEDIATE"` (the default:
            take the write lock at BEGIN), `"DEFERRED"` (SQLite's own default) or `"EXCLUSIVE"`.
        lazy_begin: begin each transaction at its first write (the default) rather than at its
            first statement. Ignored (eager) where it would change what reads see: at
            REPEATABLE READ or SERIALIZABLE, and for drivers other than psycopg, asyncpg,
            pysqlite and aiosqlite.
        replicas: URLs of read replicas (streaming standbys of this database), built like the
            primary. `with uow.read_only():` reads from one of them, round-robin, falling back
            to the primary when none can be connected to; everything else uses the primary
            (see [`UnitOfWork.read_only`][uow.UnitOfWork.read_only]).
        replica_lag_window: seconds after a context committed a write during which its
            read-only blocks stay on the primary (they would not see the write on a replica
            that has not replayed it yet). 2 by default.
        transaction_pooling: the database is reached through a connection pooler in
            transaction pooling mode (PgBouncer's `pool_mode = transaction`, or a pooler like
            it), which may hand each transaction, and each statement outside one, another
            server connection. The driver then prepares no statement a later one relies on:
            psycopg 3 gets `prepare_threshold=None`; asyncpg gets its statement caches turned
            off, the unnamed statement for each statement, and eager BEGIN (it prepares and runs a
            statement in two exchanges, which must share a transaction). Values of your own in
            `engine_options["connect_args"]` win. PostgreSQL only: `ValueError` on SQLite.

    Raises:
        TypeError: `replicas` is not a list or tuple of URLs.
        TypeError: `transaction_pooling` is not a bool.
        ValueError: `transaction_pooling=True` for a database other than PostgreSQL.
        ImportError: the URL's driver is not installed; the message says what to
            `pip install` (for PostgreSQL, `"uow-repositories[postgres]"`) and never shows the
            URL. It is a [`UowError`][uow.errors.UowError] too.

    Examples:
        ```python
        db = Database("sqlite:///app.db")
        db.create_all(Base.metadata)
        with db.Session() as session, session.begin():
            session.add(User(email="ada@example.com", name="Ada"))
        ```
    """

    def __init__(
        self,
        url: str | URL,
        engine_options: Mapping[str, Any] | None = None,
        session_options: Mapping[str, Any] | None = None,
        *,
        sqlite_transaction_mode: TransactionMode = "IMMEDIATE",
        lazy_begin: bool = True,
        replicas: Sequence[str | URL] = (),
        replica_lag_window: float = 2.0,
        transaction_pooling: bool = False,
    ) -> None:
        replica_urls = _check_replicas(replicas, replica_lag_window)
        self.url: URL
        self.lazy_begin: bool
        self.engine: Engine
        self.transaction_pooling: bool = _check_flag("transaction_pooling", transaction_pooling)
        self.url, self.lazy_begin, self.engine = build_engine(
            url, engine_options, sqlite_transaction_mode, lazy_begin, create_engine,
            self.transaction_pooling,
        )  # fmt: skip

        factory_options: dict[str, Any] = {"expire_on_commit": False}
        factory_options.update(session_options or {})
        self.Session: sessionmaker[Session] = sessionmaker(
            bind=self.engine, class_=Session, **factory_options
        )
        self.replica_engines: tuple[Engine, ...] = tuple(
            build_engine(
                url,
                engine_options,
                sqlite_transaction_mode,
                lazy_begin,
                create_engine,
                self.transaction_pooling,
            )[2]
            for url in replica_urls
        )
        self.replica_lag_window: float = float(replica_lag_window)
        # One session factory per replica, bound to its engine (uow.unit_of_work._route).
        self._replica_factories: tuple[sessionmaker[Session], ...] = tuple(
            sessionmaker(bind=engine, class_=Session, **factory_options)
            for engine in self.replica_engines
        )
        self._next_replica = itertools.count()
        # When each replica, which did not answer, may be tried again (uow.unit_of_work).
        self._replica_down_until: list[float] = [-inf] * len(self.replica_engines)
        number = next(_ids)
        # When this context last committed a write (time.monotonic()): its read-only blocks
        # stay on the primary for `replica_lag_window` seconds after it.
        self._last_write: ProcessLocal[float] = ProcessLocal(f"uow_last_write_{number}", -inf)
        self.s: ScopedSession = ScopedSession(self.Session, f"uow_session_{number}")
        # The unit-of-work frames of each context, outermost first: the one owner of that
        # state (UnitOfWork reads and replaces it). An immutable tuple, replaced (never
        # mutated) on every enter/exit, so contexts copied from one another cannot corrupt each
        # other; process-local, so a child forked inside a block starts outside any block.
        self._frames: ProcessLocal[tuple[_Frame, ...]] = ProcessLocal(f"uow_stack_{number}", ())

    @property
    def in_unit_of_work(self) -> bool:
        """Whether the current context is inside a `with uow:` block over this Database.

        For integrations and hooks that must leave an open block's session alone (a Celery
        task run eagerly from inside a block, say).
        """
        return bool(self._frames.get())

    def session_scope(self) -> AbstractContextManager[None]:
        """Close, at the end of the block, every session opened inside it: also in threads.

        `db.s` keeps one session per context. Web frameworks run sync code in worker threads
        with a *copy* of the request's context, so a session such code opens through `db.s`
        lives only in that copy, out of reach of a `db.s.remove()` at the end of the request.
        Every session opened inside `session_scope()`, in its context or in any context copied
        from it (threads of `run_in_threadpool` or `asyncio.to_thread`, tasks), is recorded and
        closed when the block ends, also after an exception. Each context still has its own
        session: two threads never share one. A session the context had before the block (in
        an enclosing `with uow:`) is left alone. The FastAPI integration enters it for every
        request (`uow.integrations.fastapi.DatabaseMiddleware`); use it directly for other
        frameworks.

        Examples:
            ```python
            with db.session_scope():
                await asyncio.to_thread(lambda: db.s.execute(select(User)).all())
            # the session the thread opened is closed here
            ```
        """
        return self.s.scope()

    @contextmanager
    def test_transaction(self) -> Iterator[Connection]:
        """Run the block in one transaction that is rolled back at the end: for tests.

        Every session of this Database opened inside the block joins one outer connection and
        its transaction: `db.s`, units of work and `db.Session()`, in this context and in any
        other thread or task (a web framework's test client serving a request). Each session's
        transaction is a SAVEPOINT of the outer one (SQLAlchemy's
        `join_transaction_mode="create_savepoint"`), so code under test runs unchanged: the
        COMMIT of a `with uow:` block releases its savepoint, and its `on_commit` callbacks run
        then, as after a commit; an exception rolls back to the block's savepoint only; a
        nested block is a savepoint inside it. At the end of the block everything is rolled
        back, also when the block raised, and the context's `db.s` session is removed.

        The outer transaction is begun on the server at once (lazy BEGIN waits for nothing
        here), so on SQLite it holds the database's write lock until the end: other
        connections to the same file wait for it. Sessions opened inside share one connection,
        so they must take turns: one request at a time, and no session used from two threads
        at once (a test client's requests run one at a time, which is fine). Sessions opened
        before the block keep their own connection and do not join.

        Yields:
            The outer connection (`db.s` and the units of work need nothing from it).

        Raises:
            UnitOfWorkError: already inside a test transaction of this Database, inside a
                `with uow:` block, or with a `db.s` session open in this context (it could not
                join).

        Examples:
            ```python
            with db.test_transaction():
                with uow:
                    uow.users.create(email="ada@example.com")
                with uow:
                    assert uow.users.count() == 1
            with uow:
                assert uow.users.count() == 0  # rolled back
            ```
        """
        _check_can_join(self)
        with self.engine.connect() as connection:
            transaction = connection.begin()
            try:
                _begin_on_server(connection)
                with _sessions_joining(self.Session, connection):
                    self._test_connection = connection
                    try:
                        yield connection
                    finally:
                        self._test_connection = None
                        self.s.remove()
            finally:
                if transaction.is_active:
                    transaction.rollback()

    # The outer connection of the open test transaction, which create_all and drop_all join.
    _test_connection: Connection | None = None

    def create_all(self, metadata: MetaData) -> None:
        """Create the tables of `metadata` that do not exist yet (inside `test_transaction()`,
        in its transaction: an app's start-up `create_all` then waits for no lock)."""
        metadata.create_all(self._test_connection or self.engine)

    def drop_all(self, metadata: MetaData) -> None:
        """Drop the tables of `metadata` that exist (inside `test_transaction()`, in its
        transaction)."""
        metadata.drop_all(self._test_connection or self.engine)

    def dispose(self) -> None:
        """Close the pool's connections (`engine.dispose()`, and the replicas'); the Database
        stays usable."""
        self.engine.dispose()
        for engine in self.replica_engines:
            engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"


def build_engine(
    url: str | URL,
    engine_options: Mapping[str, Any] | None,
    sqlite_transaction_mode: TransactionMode,
    lazy_begin: bool,
    create: Callable[..., E],
    transaction_pooling: bool = False,
) -> tuple[URL, bool, E]:
    """An engine with the set-up every engine of a Database gets, primary or replica, made by
    `create` (`create_engine`, or `create_async_engine` for an AsyncDatabase): its resolved URL,
    whether BEGIN is lazy on it, and the engine. `engine_options` is copied, never mutated."""
    options = dict(engine_options or {})
    resolved, lazy = _engine_options(url, options, lazy_begin, transaction_pooling)
    engine = create(resolved, **options)
    made: Any = engine
    sync_engine: Engine = getattr(made, "sync_engine", made)  # an AsyncEngine's, or the Engine
    configure_engine(sync_engine, options, sqlite_transaction_mode, lazy)
    return resolved, lazy, engine


def _engine_options(
    url: str | URL, options: dict[str, Any], lazy_begin: bool, transaction_pooling: bool = False
) -> tuple[URL, bool]:
    """Resolve `url` and complete `options` (in place) for `create_engine` or
    `create_async_engine`; returns the URL and whether BEGIN is lazy."""
    # A caller who hands create_engine a DBAPI module of their own needs no installed driver.
    resolved = resolve_url(url, check_driver="module" not in options)
    if transaction_pooling and not _pooling.configure(resolved, options):
        lazy_begin = False
    lazy = lazy_begin and _begin.supports_lazy_begin(resolved, options)
    is_sqlite = resolved.get_backend_name() == "sqlite"
    if lazy and not is_sqlite:
        # The driver stays out of transactions; uow._begin sends BEGIN at the first write.
        # (the SQLite drivers are told the same on connect, by uow._sqlite, in either mode.)
        options["isolation_level"] = "AUTOCOMMIT"
    if is_sqlite and _sqlite.is_configurable(resolved):
        connect_args = dict(options.get("connect_args") or {})
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT)
        options["connect_args"] = connect_args
    return resolved, lazy


def _check_replicas(replicas: Sequence[str | URL], lag_window: float) -> list[str | URL]:
    """The replica URLs, checked before anything is built."""
    if isinstance(replicas, (str, bytes)) or not isinstance(replicas, (list, tuple)):
        raise TypeError(
            f"replicas takes a list of URLs, not {type(replicas).__name__}: "
            "write replicas=[url, ...]"
        )
    for replica in replicas:
        if not isinstance(replica, (str, URL)):
            raise TypeError(f"a replica URL is a str or a URL, not {type(replica).__name__}")
    if isinstance(lag_window, bool) or not isinstance(lag_window, (int, float)):
        raise TypeError(f"replica_lag_window takes seconds, not {type(lag_window).__name__}")
    if not lag_window >= 0:
        raise ValueError(f"replica_lag_window must be 0 or more seconds, not {lag_window!r}")
    return list(replicas)


def _check_flag(name: str, value: object) -> bool:
    """`value`, refused unless it is a bool (`bool("no")` would be True)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} takes True or False, not {type(value).__name__}")
    return value


def _check_can_join(database: Any) -> None:
    """Refuse a test transaction where sessions of `database` could not all join it."""
    if database.Session.kw.get("join_transaction_mode") == _JOIN_MODE:
        raise UnitOfWorkError(f"{database!r} is already inside a test transaction")
    if database.in_unit_of_work:
        raise UnitOfWorkError(
            "test_transaction() cannot start inside a `with uow:` block: its session could "
            "not join the test transaction. Enter test_transaction() first"
        )
    if database.s.registry.has():
        raise UnitOfWorkError(
            "this context has a session (db.s) open already, which could not join the test "
            "transaction: remove it first (`db.s.remove()`) or enter test_transaction() first"
        )


_JOIN_MODE = "create_savepoint"


def _begin_on_server(connection: Connection) -> None:
    """Begin the connection's transaction on the server now, where BEGIN is lazy (it waits
    for a first write otherwise, and the reads before it would see no outer transaction)."""
    info = connection.info
    if info.get(LAZY) and not info.get(BEGUN):
        info[BEGUN] = True
        _begin.send(connection.connection.dbapi_connection, info[BEGIN_STATEMENT])


@contextmanager
def _sessions_joining(factory: Any, connection: Any) -> Iterator[None]:
    """Make every session `factory` (a `sessionmaker` or `async_sessionmaker`) creates inside
    the block join `connection`'s transaction through a SAVEPOINT of its own."""
    saved = dict(factory.kw)
    factory.configure(bind=connection, join_transaction_mode=_JOIN_MODE)
    try:
        yield
    finally:
        factory.kw.clear()
        factory.kw.update(saved)


def configure_engine(
    engine: Engine,
    options: Mapping[str, Any],
    sqlite_transaction_mode: TransactionMode,
    lazy_begin: bool,
) -> None:
    """Install what every engine of a Database gets (for an AsyncDatabase, on its
    `sync_engine`): liveness checks, SQLite set-up, lazy or eager BEGIN, savepoint and
    commit handling, fork safety."""
    url = engine.url
    is_sqlite = url.get_backend_name() == "sqlite"
    configurable_sqlite = is_sqlite and _sqlite.is_configurable(url)
    if not is_sqlite and "pool_pre_ping" not in options:
        # Replaces a connection its server ended (restart, failover, killed backend) at
        # checkout, pinging only when its socket shows the server said something: the
        # first unit of work after a restart succeeds, and the others pay no round trip.
        # `pool_pre_ping=True` pings at every checkout instead; False checks nothing.
        # SQLite has no server to lose.
        _liveness.install(engine)
    if configurable_sqlite:
        _sqlite.configure(engine)
    begin = _sqlite.begin_statement(sqlite_transaction_mode) if is_sqlite else "BEGIN"
    if lazy_begin:
        _begin.install(engine, begin)
    elif configurable_sqlite:
        _begin.install_eager(engine, begin)
    _transactions.install(engine)
    _fork.make_fork_safe(engine)
