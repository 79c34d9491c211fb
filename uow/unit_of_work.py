"""`UnitOfWork`: one transaction per outermost `with uow:` block, savepoints when nested.

The design follows Django's `atomic`. The transaction belongs to the pair (context, Database),
not to a UnitOfWork object: each context keeps a stack of frames for each Database in a
ContextVar. The outermost frame owns the session and its transaction; every nested frame owns
a SAVEPOINT. Because the stack lives in the context, two UnitOfWork objects over one Database
entered in the same context share the transaction, and one UnitOfWork object (a container
Singleton, say) can serve many threads or tasks at once: each sees only its own stack.
"""

from __future__ import annotations

import inspect
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Protocol,
    Self,
    TypeVar,
    get_args,
    get_origin,
    get_type_hints,
)
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError, PendingRollbackError

from repositories._connection import READ_ONLY_OPTION, has_written
from repositories.async_repository import AsyncRepository
from repositories.repository import Repository
from uow import _retry, _transactions
from uow.errors import UnitOfWorkError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from sqlalchemy.orm import ORMExecuteState, SessionTransaction

    from uow.database import Database
    from uow.session import Session

__all__ = ["UnitOfWork", "UnitOfWorkBase"]

logger = logging.getLogger("uow")

_OUTSIDE = "use it inside a `with uow:` block"

_T = TypeVar("_T")


_Callback = tuple["Callable[[], object]", bool]


@dataclass(eq=False, slots=True)
class _Frame:
    session: Session  # the sync session (for an AsyncDatabase, its AsyncSession's sync_session)
    facade: Any  # what repositories and `uow.session` get: the Session, or the AsyncSession
    savepoint: SessionTransaction | None  # None for the outermost frame
    callbacks: list[_Callback] = field(default_factory=list)
    rollback_only: bool = False
    repositories: dict[Any, Any] = field(default_factory=dict)


class _Scoped(Protocol):
    def __call__(self) -> Any: ...

    def _remove_now(self) -> None: ...

    def _forget(self) -> None: ...


def _retired(session: Any) -> bool:
    """Whether `session` belonged to a block that has ended (see `Session._retire`)."""
    return bool(getattr(session, "_retired", False))


class UnitOfWorkBase:
    """The transaction logic that [`UnitOfWork`][uow.UnitOfWork] and
    [`AsyncUnitOfWork`][uow.AsyncUnitOfWork] share: one implementation, run directly by the sync
    class and through SQLAlchemy's greenlet bridge by the async one. Not used on its own."""

    # The repository class its annotations must name (Repository or AsyncRepository).
    _repository_class: ClassVar[type[Any]] = Repository
    database: Any

    def _scoped(self) -> _Scoped:
        scoped: _Scoped = self.database.s
        return scoped

    # -- the stack of this context --------------------------------------------------------------

    def _frames(self) -> tuple[_Frame, ...]:
        frames: tuple[_Frame, ...] = self.database._frames.get()
        return frames

    def _set_frames(self, frames: tuple[_Frame, ...]) -> None:
        self.database._frames.set(frames)

    def _innermost(self, what: str) -> _Frame:
        frames = self._frames()
        if not frames:
            raise UnitOfWorkError(f"{what} needs an open unit of work; {_OUTSIDE}")
        return frames[-1]

    def _outermost(self) -> _Frame:
        frames = self._frames()
        if not frames:
            raise UnitOfWorkError(f"uow.session is only available in a block; {_OUTSIDE}")
        return frames[0]

    @property
    def in_block(self) -> bool:
        """Whether this context is inside a block of a unit of work over this database."""
        return bool(self.database.in_unit_of_work)

    # -- entering and leaving (sync; the async class runs them in the bridge) --------------------

    def _enter(self, read_only: bool = False) -> None:
        frames = self._frames()
        if frames and _retired(frames[0].session):
            # A context copied from a block that has ended since (a task or thread started
            # inside it): that block's state is not this context's. Start afresh.
            frames = ()
        if frames:
            first = frames[0]
            frame = _Frame(first.session, first.facade, first.session.begin_nested())
        else:
            routed = read_only and _route_to_replica(self.database, self._scoped())
            facade = self._scoped()()
            session: Session = getattr(facade, "sync_session", facade)
            if _retired(session):  # the ended block's session, in a copied context
                self._scoped()._forget()
                facade = self._scoped()()
                session = getattr(facade, "sync_session", facade)
            fresh = not session.in_transaction()
            if fresh:
                session.begin()
            if read_only and hasattr(session, "info"):  # (not the in-memory one of uow.testing)
                _make_read_only(session)
                if fresh and not routed:  # (a replica's connection is read-only already)
                    _read_only_connection(session)
            frame = _Frame(session, facade, None)
        self._set_frames((*frames, frame))

    def _exit(self, failed: bool) -> list[_Callback]:
        """Leave the innermost block; returns the callbacks to run (after an outermost commit)."""
        frames = self._frames()
        if not frames:
            raise UnitOfWorkError("`with uow:` exited in another context than it was entered")
        *outer, frame = frames
        # Pop first: whatever happens below, this context is out of the block.
        self._set_frames(tuple(outer))
        if outer:
            _leave_savepoint(frame, outer[-1], failed)
            return []
        committed = False
        try:
            committed = _leave_transaction(self.database, frame, failed)
        finally:
            self._scoped()._remove_now()
            frame.session._retire()
        return _committed(self.database, frame.callbacks) if committed else []

    def _commit(self) -> list[_Callback]:
        frames = self._frames()
        if not frames:
            raise UnitOfWorkError(f"uow.commit() needs an open unit of work; {_OUTSIDE}")
        if len(frames) > 1:
            raise UnitOfWorkError(
                "uow.commit() is only allowed in the outermost block: a nested block "
                "is a savepoint, which commits with its outer transaction"
            )
        frame = frames[0]
        callbacks, frame.callbacks = frame.callbacks, []
        try:
            _commit_noting_writes(self.database, frame.session)
        except BaseException:
            # A failed COMMIT (a deferred constraint, say) leaves SQLAlchemy's transaction
            # half-finished: roll it back and begin again, so the block stays usable. The
            # callbacks belonged to the work that was lost.
            _rollback(frame.session.rollback, raise_errors=False)
            frame.session.begin()
            raise
        frame.session.begin()
        return _committed(self.database, callbacks)

    def _rollback(self) -> None:
        frame = self._innermost("uow.rollback()")
        if frame.savepoint is None:
            frame.session.rollback()
            frame.session.begin()
        else:
            if not _is_closed(frame.savepoint):
                frame.savepoint.rollback()
            frame.savepoint = frame.session.begin_nested()
        frame.callbacks.clear()
        frame.rollback_only = False

    # -- inside a block -------------------------------------------------------------------------

    def set_rollback(self, rollback: bool) -> None:
        """Make a clean exit of the innermost block roll back (`True`) or commit (`False`).

        Raises:
            UnitOfWorkError: outside a block.
        """
        self._innermost("uow.set_rollback()").rollback_only = rollback

    def _add_callback(self, callback: Callable[[], object], robust: bool) -> None:
        if not callable(callback):
            raise TypeError(f"on_commit() takes a callable, not {type(callback).__name__}")
        self._innermost("uow.on_commit()").callbacks.append((callback, robust))

    # -- repositories ---------------------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A descriptor per annotated name, so `uow.users` is a plain attribute lookup (no
        # failed lookup first, as with __getattr__). Which names are repositories is known only
        # once the annotations resolve, on first use.
        for name in inspect.get_annotations(cls):
            if name not in cls.__dict__:
                setattr(cls, name, _RepositoryAttribute(name))

    def _repository(self, name: str) -> Any:
        factories = _repository_factories(type(self))
        if name not in factories:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        frames = self._frames()
        if not frames:
            raise UnitOfWorkError(
                f"{type(self).__name__}.{name} is only available inside a block: "
                f"write `with uow:` (`async with uow:`) and use uow.{name} in it"
            )
        key, build = factories[name]
        cache_ = frames[0].repositories
        repository = cache_.get(key)
        if repository is None:
            # A database may build its repositories itself (the in-memory one, uow.testing).
            custom = getattr(self.database, "_build_repository", None)
            facade = frames[0].facade
            repository = build(facade) if custom is None else custom(key, facade)
            cache_[key] = repository
        return repository

    def __repr__(self) -> str:
        return f"<{type(self).__name__} over {self.database!r}>"


class UnitOfWork(UnitOfWorkBase):
    """A transaction boundary with typed repositories, used as `with uow:`.

    Declare repositories as class annotations; each is built once per transaction, on its session:

    ```python
    class AppUnitOfWork(UnitOfWork):
        users: UserRepository
        posts: Repository[Post]

    uow = AppUnitOfWork(db)
    with uow:
        user = uow.users.first_or_create(email="ada@example.com", defaults={"name": "Ada"})
        uow.on_commit(lambda: print("committed", user.id))
    ```

    The outermost block begins a transaction on the context's session (`db.s()`); a clean exit
    commits, an exception rolls back and re-raises, and the session is always closed and
    removed. A nested block (this or another UnitOfWork over the same Database) is a SAVEPOINT:
    an exception inside it rolls back to the savepoint only. If the context's session already
    had a transaction when the outermost block began (you used `db.s` before), the block takes
    that transaction over, and its commit or rollback covers the earlier work too.

    Annotations are resolved with `typing.get_type_hints` in the module that defines the class,
    so the repository classes must be importable there (string annotations included).

    Args:
        database: the Database whose context-local session the unit of work uses.
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def session(self) -> Session:
        """The session of the current block (the same object as `db.s()` inside it).

        Raises:
            UnitOfWorkError: outside a `with uow:` block.
        """
        return self._outermost().session

    def __enter__(self) -> Self:
        self._enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _run_callbacks(self._exit(exc_type is not None))

    @contextmanager
    def read_only(self) -> Iterator[Self]:
        """`with uow.read_only():` a block that only reads, from a read replica when it can.

        As an outermost block over a Database built with `replicas=[...]`, its session is bound
        to a replica (the next one, round-robin; one that cannot be connected to is skipped,
        and left out for the next 5 seconds; with none left the block uses the primary). Lazy
        BEGIN applies there as on the primary. The block may not write: a flush of new,
        changed or deleted objects, an ORM INSERT, UPDATE or DELETE and `FOR UPDATE` raise
        `UnitOfWorkError` before any SQL, and on PostgreSQL, replica or primary, its
        transaction is READ ONLY, so the server refuses any other write (SQL text, COPY) with
        its "read-only transaction" error. The block commits nothing: it ends with a rollback
        (which lazy BEGIN makes send nothing), and its on_commit callbacks run then.

        It runs on the primary instead, so that it sees this context's own writes: nested in
        a `with uow:` block (it then is a plain nested block of that transaction), when this
        context's `db.s` session is already in use, and for `replica_lag_window` seconds after
        this context committed a write. Without replicas it is a read-only block on the
        primary.

        Raises:
            UnitOfWorkError: at a write inside the block (see above).
        """
        self._enter(read_only=True)
        try:
            yield self
        except BaseException:
            _run_callbacks(self._exit(True))
            raise
        _run_callbacks(self._exit(False))

    def commit(self) -> None:
        """Commit the work so far, run the on_commit callbacks so far, and begin again.

        If the COMMIT fails (a deferred constraint, a lost connection), the work so far is
        rolled back, its callbacks are dropped, a new transaction begins, and the error is
        raised: catch it to go on in the same block.

        Raises:
            UnitOfWorkError: outside a block, or inside a nested block (a savepoint cannot be
                committed on its own; leave the nested block instead).
        """
        _run_callbacks(self._commit())

    def rollback(self) -> None:
        """Roll back the innermost block's work (its savepoint when nested) and go on in it.

        Callbacks registered in that block are dropped.

        Raises:
            UnitOfWorkError: outside a block.
        """
        self._rollback()

    def on_commit(self, callback: Callable[[], object], robust: bool = False) -> None:
        """Run `callback` after the outermost transaction commits; never after a rollback.

        Callbacks run first in, first out, after the session is closed, so they may open units
        of work of their own. A callback registered in a savepoint that rolls back is dropped.
        With `robust=True` an exception from the callback is logged and the next one runs;
        otherwise it propagates and the remaining callbacks are skipped (the data is committed).

        Raises:
            TypeError: `callback` is not callable, or is a coroutine function (which only an
                [`AsyncUnitOfWork`][uow.AsyncUnitOfWork] awaits); refused now, not after the
                commit.
            UnitOfWorkError: outside a block.
        """
        if inspect.iscoroutinefunction(callback):
            raise TypeError(
                f"on_commit() of a sync unit of work cannot await {callback!r}: "
                "register a plain function, or use an AsyncUnitOfWork"
            )
        self._add_callback(callback, robust)

    def run(self, fn: Callable[..., _T], /, *args: Any, retries: int = 3, **kwargs: Any) -> _T:
        """Run `fn(*args, **kwargs)` in a `with uow:` block; run it again after a serialization
        failure or a deadlock.

        When the block fails with an error [`is_retryable`][uow.is_retryable] accepts (SQLSTATE
        40001 or 40P01, at any statement or at the COMMIT), it is rolled back and the whole block
        runs again, after a short random wait that doubles with each attempt (jittered
        exponential backoff), up to `retries` more times; then the last error is raised. Any
        other error is raised at once. Only the attempt that committed runs its on_commit
        callbacks, after the retries are over (an error from a callback is not retried). `fn`
        must be safe to run more than once: keep side effects in on_commit callbacks.

        Returns:
            What `fn` returned in the attempt that committed.

        Raises:
            TypeError: `fn` is not callable or is a coroutine function, or `retries` is not an
                int; before anything runs.
            ValueError: `retries` is negative.
            UnitOfWorkError: inside an open block (a part of a transaction cannot be retried).
        """
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"run() of a sync unit of work cannot await {fn!r}: "
                "pass a plain function, or use an AsyncUnitOfWork"
            )
        _retry.check(self, fn, retries)
        result, callbacks = _retry.run(self, fn, args, kwargs, retries)
        _run_callbacks(callbacks)
        return result  # type: ignore[no-any-return]


class _RepositoryAttribute:
    """Non-data descriptor for an annotated name: values set on an instance still win."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, uow: UnitOfWorkBase | None, owner: type[UnitOfWorkBase]) -> Any:
        if uow is None:
            return self
        return uow._repository(self.name)


_READ_ONLY = "uow_read_only"
# Seconds a replica that could not be connected to is left out of read_only()'s turns.
REPLICA_RETRY_AFTER = 5.0


def _route_to_replica(database: Any, scoped: Any) -> bool:
    """Put a session bound to the next replica that answers in this context's registry, unless
    the block must see this context's own writes (it then stays on the primary). Whether it
    did."""
    factories = getattr(database, "_replica_factories", ())
    if not factories:
        return False
    if time.monotonic() - database._last_write.get() < database.replica_lag_window:
        return False  # this context committed a write just now: a replica may not have it yet
    registry = scoped.registry
    if registry.has():
        current = registry()
        if not _retired(getattr(current, "sync_session", current)):
            return False  # the context's session is in use (db.s), with whatever it did so far
        scoped._forget()
    down_until = database._replica_down_until
    for _ in factories:
        index = next(database._next_replica) % len(factories)
        if down_until[index] > time.monotonic():
            continue  # it did not answer a moment ago: no wait on it for every block
        facade = factories[index]()
        session = getattr(facade, "sync_session", facade)
        try:
            _read_only_connection(session)  # a pool checkout: no round trip if it is healthy
        except (DBAPIError, OSError):
            logger.warning(
                "a read replica did not answer; leaving it out for %s s and trying the next",
                REPLICA_RETRY_AFTER,
                exc_info=True,
            )
            down_until[index] = time.monotonic() + REPLICA_RETRY_AFTER
            session.close()
            continue
        registry.set(facade)
        return True
    logger.warning("no read replica answered: reading from the primary")
    return False


def _wrote(database: Any, session: Session) -> bool:
    """Whether the session's transaction may hold writes (see `has_written`) that a read-only
    block must wait for: only asked of a database with replicas."""
    if not getattr(database, "_replica_factories", ()):
        return False
    transaction = session.get_transaction()
    if transaction is None:
        return False
    if _is_read_only(session):
        return False  # a read-only block's statements cannot have written (see read_only)
    return any(has_written(entry[0]) for entry in transaction._connections.values())


def _is_read_only(session: Any) -> bool:
    info = getattr(session, "info", None)  # the in-memory session of uow.testing has none
    return bool(info and info.get(_READ_ONLY))


def _refuse_write(what: str) -> None:
    raise UnitOfWorkError(
        f"{what} inside a `uow.read_only()` block, which only reads (possibly from a read "
        "replica): write in a `with uow:` block"
    )


def _make_read_only(session: Session) -> None:
    """Refuse the writes the session can see, for the rest of its life (it is closed and
    dropped at the end of the block). Listeners on this session only: a class-wide
    `do_orm_execute` listener would put every statement of every session on a slower path."""
    session.info[_READ_ONLY] = True
    event.listen(session, "before_flush", _check_flush)
    event.listen(session, "do_orm_execute", _check_statement)


def _read_only_connection(session: Session) -> None:
    """Check the session's connection out of the pool now, made to begin READ ONLY
    transactions on PostgreSQL (SQLAlchemy's `postgresql_readonly`; lazy BEGIN sends `BEGIN
    READ ONLY`): what the session cannot see as a write (SQL text, COPY) the server refuses.
    The pool undoes it when the connection goes back. A session bound to a connection (one
    joining `test_transaction()`'s) has a transaction open there already, which cannot be
    changed: it keeps the checks before SQL only."""
    bind = session.get_bind()
    readonly = isinstance(bind, Engine) and bind.dialect.name == "postgresql"
    session.connection(execution_options={READ_ONLY_OPTION: True} if readonly else None)


def _check_flush(session: Any, flush_context: Any, instances: Any) -> None:
    if session.info.get(_READ_ONLY) and (session.new or session.dirty or session.deleted):
        _refuse_write("a flush of new, changed or deleted objects")


def _check_statement(state: ORMExecuteState) -> None:
    if not state.session.info.get(_READ_ONLY):
        return
    if state.is_insert or state.is_update or state.is_delete:
        _refuse_write("an INSERT, UPDATE or DELETE")
    if state.is_select and getattr(state.statement, "_for_update_arg", None) is not None:
        _refuse_write("SELECT ... FOR UPDATE")


def _leave_savepoint(frame: _Frame, parent: _Frame, failed: bool) -> None:
    savepoint = frame.savepoint
    if savepoint is None or _is_closed(savepoint):
        return
    if failed or frame.rollback_only:
        _rollback(savepoint.rollback, raise_errors=not failed)
        return
    try:
        savepoint.commit()  # RELEASE SAVEPOINT, after flushing the block's pending changes
    except BaseException:
        _rollback(savepoint.rollback, raise_errors=False)
        raise
    parent.callbacks.extend(frame.callbacks)


def _is_closed(savepoint: SessionTransaction) -> bool:
    # Not `is_active`: after a failed flush SQLAlchemy rolls back to the savepoint itself but
    # leaves it deactivated, not closed, and it must still be rolled back before the session
    # can be used again. SQLAlchemy's own `with session.begin_nested():` checks this method.
    return bool(savepoint._transaction_is_closed())


def _leave_transaction(database: Any, frame: _Frame, failed: bool) -> bool:
    """Commit or roll back the outermost transaction; True when it committed."""
    session = frame.session
    if failed or frame.rollback_only:
        _rollback(session.rollback, raise_errors=not failed)
        return False
    if _is_read_only(session):
        # A read-only block commits nothing: objects added in it (whose flush was refused)
        # are dropped, and its callbacks run as after a commit.
        session.rollback()
        return True
    try:
        _commit_noting_writes(database, session)
    except BaseException:
        _rollback(session.rollback, raise_errors=False)
        raise
    return True


def _commit_noting_writes(database: Any, session: Session) -> None:
    """Commit; for a database with replicas, note when this context last committed a write
    (its read-only blocks stay on the primary for `replica_lag_window` after it)."""
    wrote = _wrote(database, session)
    _commit(session)
    if wrote:
        database._last_write.set(time.monotonic())


def _commit(session: Session) -> None:
    try:
        session.commit()
    except PendingRollbackError as error:
        # A flush failed earlier in the block and the caller caught the error: SQLAlchemy has
        # already rolled the transaction back. Say so, chained to that error, instead of
        # SQLAlchemy's causeless "first issue Session.rollback()".
        cause = getattr(session.get_transaction(), "_rollback_exception", None) or error
        raise _transactions.aborted(cause) from cause


def _rollback(rollback: Callable[[], None], raise_errors: bool) -> None:
    """Roll back; with an exception already on its way, a failed rollback is only logged."""
    try:
        rollback()
    except Exception:
        if raise_errors:
            raise
        # Never hide the original exception behind a secondary failure.
        logger.exception("rollback failed while handling another exception")


# The databases whose committed on_commit callbacks are collected instead of run, by
# `uow.testing.capture_on_commit_callbacks`: per Database, not per context, so that the
# callbacks of a request served in another thread are collected too.
_captured: WeakKeyDictionary[Any, list[_Callback]] = WeakKeyDictionary()


def _committed(database: Any, callbacks: list[_Callback]) -> list[_Callback]:
    """The callbacks a commit must run now: none while `database`'s are being captured."""
    captured = _captured.get(database)
    if captured is None or not callbacks:
        return callbacks
    captured.extend(callbacks)
    return []


def _run_callbacks(callbacks: list[_Callback]) -> None:
    for callback, robust in callbacks:
        run_callback(callback, robust)


def run_callback(callback: Callable[[], object], robust: bool) -> object:
    """Call an on_commit callback; with `robust`, log its exception instead of raising it."""
    if not robust:
        return callback()
    try:
        return callback()
    except Exception:
        log_callback_failure(callback)
        return None


def log_callback_failure(callback: object) -> None:
    """Log the exception being handled as `callback`'s failure."""
    logger.exception("on_commit callback %r failed", callback)


_REPOSITORY_CLASSES = (Repository, AsyncRepository)


def _build_generic(repository_class: type[Any], model: type[Any], session: Any) -> Any:
    return repository_class(session, model)


_Factories = dict[str, tuple[Any, "Callable[[Any], Any]"]]
_factories: WeakKeyDictionary[type[UnitOfWorkBase], _Factories] = WeakKeyDictionary()


def _repository_factories(cls: type[UnitOfWorkBase]) -> _Factories:
    """The repository annotations of `cls`: name -> (cache key, builder from a session)."""
    factories = _factories.get(cls)
    if factories is None:
        factories = _factories[cls] = _resolve_factories(cls)
    return factories


def _resolve_factories(cls: type[UnitOfWorkBase]) -> _Factories:
    try:
        hints = get_type_hints(cls)
    except NameError as error:
        raise UnitOfWorkError(
            f"cannot resolve the annotations of {cls.__name__} in module {cls.__module__}: "
            f"{error}. Repository types must be importable in the module defining the class."
        ) from error
    factories: _Factories = {}
    wanted = cls._repository_class
    for name, hint in hints.items():
        origin, args = get_origin(hint), get_args(hint)
        repository_class = hint if isinstance(hint, type) else origin
        if not isinstance(repository_class, type):
            continue
        if not issubclass(repository_class, _REPOSITORY_CLASSES):
            continue
        if not issubclass(repository_class, wanted):
            raise UnitOfWorkError(
                f"{cls.__name__}.{name}: a {cls.__name__} builds {wanted.__name__} classes, "
                f"and {repository_class.__name__} is not one (annotate it "
                f"{wanted.__name__}[Model], or a subclass of {wanted.__name__})"
            )
        if repository_class is hint:
            factories[name] = (hint, hint)
        elif args:
            factories[name] = (hint, partial(_build_generic, origin, args[0]))
    return factories
