"""The async face offers what the sync face offers: same names, same parameters, awaited where
they touch the database. A method added on one side only, or a parameter renamed, defaulted or
moved on one side only, fails here."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from repositories import AsyncQuery, AsyncRepository, Query, Repository
from tests.models import User
from uow import AsyncSession, AsyncUnitOfWork, Session, UnitOfWork
from uow.async_session import AsyncScopedSession

# The methods that build a query without I/O, on both faces: plain on the async one too.
BUILDERS = frozenset(
    {
        "query",
        "filter",
        "exclude",
        "order_by",
        "select_for_update",
        "select_related",
        "prefetch_related",
        "options",
        "statement",
    }
)
# Plain on the async face, returning an async iterator (`async for obj in query.iterator()`).
STREAMS = frozenset({"iterator"})
# Plain on both faces: they only change the block's state (DESIGN.md, "Async (contract)").
PLAIN_ON_THE_UNIT_OF_WORK = frozenset({"on_commit", "set_rollback"})
# Blocks on both faces: `with uow.read_only():`, `async with uow.read_only():`.
BLOCKS_ON_THE_UNIT_OF_WORK = frozenset({"read_only"})


def public_methods(cls: type[Any]) -> dict[str, Callable[..., Any]]:
    """The public functions of `cls` (inherited ones included), by name."""
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def public_properties(cls: type[Any]) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(cls, lambda m: isinstance(m, property))
        if not name.startswith("_")
    }


def shape(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """The parameters as (name, kind, default): what callers depend on, annotations aside."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def is_awaited(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function)


SURFACES = {"Repository": (Repository, AsyncRepository), "Query": (Query, AsyncQuery)}


@pytest.mark.parametrize(("sync_class", "async_class"), SURFACES.values(), ids=list(SURFACES))
def test_every_public_method_exists_on_the_async_class_with_the_same_parameters(
    sync_class: type[Any], async_class: type[Any]
) -> None:
    sync_methods = public_methods(sync_class)
    async_methods = public_methods(async_class)
    assert sync_methods, sync_class  # the comparison below compares something
    missing = sorted(set(sync_methods) - set(async_methods))
    assert missing == [], f"{async_class.__name__} lacks {missing}"
    for name, method in sync_methods.items():
        assert shape(async_methods[name]) == shape(method), f"{async_class.__name__}.{name}"
    assert public_properties(sync_class) <= public_properties(async_class)


def test_a_repository_is_built_with_the_same_arguments() -> None:
    # (An AsyncQuery is built around a Query, by its repository: users never build one.)
    assert shape(AsyncRepository.__init__) == shape(Repository.__init__)


@pytest.mark.parametrize(("sync_class", "async_class"), SURFACES.values(), ids=list(SURFACES))
def test_methods_that_touch_the_database_are_coroutines_and_builders_are_plain(
    sync_class: type[Any], async_class: type[Any]
) -> None:
    async_methods = public_methods(async_class)
    for name in public_methods(sync_class):
        method = async_methods[name]
        where = f"{async_class.__name__}.{name}"
        if name in BUILDERS:
            assert not is_awaited(method), f"{where} builds a query: plain, not a coroutine"
        elif name in STREAMS:
            assert not is_awaited(method), f"{where} returns an async iterator"
            assert "AsyncIterator" in str(inspect.signature(method).return_annotation), where
        else:
            assert is_awaited(method), f"{where} touches the database: a coroutine"


def test_the_builders_named_here_are_the_sync_faces_own() -> None:
    # A builder renamed or removed on the sync side would leave a stale name in BUILDERS.
    named = set(public_methods(Repository)) | set(public_methods(Query))
    assert named >= BUILDERS
    assert named >= STREAMS


def test_a_query_is_sliced_without_io_and_iterated_asynchronously() -> None:
    # `query[a:b]` and `query[n]` go through one plain __getitem__ on both faces (`await
    # query[n]` is the n-th object); `for` over a Query is `async for` over an AsyncQuery.
    assert not is_awaited(AsyncQuery.__getitem__)
    assert shape(AsyncQuery.__getitem__) == shape(Query.__getitem__)
    assert hasattr(Query, "__iter__")
    assert hasattr(AsyncQuery, "__aiter__")
    assert not is_awaited(AsyncQuery.__aiter__)


def test_a_repository_has_the_same_public_attributes_once_built() -> None:
    with Session(create_engine("sqlite://")) as session:
        sync_names = {name for name in vars(Repository(session, User)) if name[0] != "_"}
    engine = create_async_engine("sqlite+aiosqlite://")
    async_names = set(vars(AsyncRepository(AsyncSession(engine), User)))
    assert sync_names  # session, model
    assert sync_names <= async_names


def test_the_async_unit_of_work_has_every_public_name_of_the_unit_of_work() -> None:
    sync_names = {name for name in dir(UnitOfWork) if not name.startswith("_")}
    missing = sorted(sync_names - set(dir(AsyncUnitOfWork)))
    assert missing == []
    sync_methods = public_methods(UnitOfWork)
    async_methods = public_methods(AsyncUnitOfWork)
    assert {"commit", "rollback", "on_commit", "set_rollback"} <= set(sync_methods)
    for name, method in sync_methods.items():
        where = f"AsyncUnitOfWork.{name}"
        assert shape(async_methods[name]) == shape(method), where
        if name in BLOCKS_ON_THE_UNIT_OF_WORK:
            assert inspect.isasyncgenfunction(inspect.unwrap(async_methods[name])), where
            continue
        assert is_awaited(async_methods[name]) == (name not in PLAIN_ON_THE_UNIT_OF_WORK), where
    assert public_properties(UnitOfWork) <= public_properties(AsyncUnitOfWork)
    assert hasattr(AsyncUnitOfWork, "__aenter__")
    assert hasattr(AsyncUnitOfWork, "__aexit__")
    assert shape(AsyncUnitOfWork.__init__) == shape(UnitOfWork.__init__)


# The seed helpers: what uow.Session adds to SQLAlchemy's Session (first, create, ...).
SEED_HELPERS = {
    name: member
    for name, member in vars(Session).items()
    if inspect.isfunction(member) and not name.startswith("_")
}


def test_the_seed_helpers_are_found() -> None:
    assert {"all", "first", "create", "first_or_create", "create_or_first"} <= set(SEED_HELPERS)


@pytest.mark.parametrize("async_class", [AsyncSession, AsyncScopedSession])
@pytest.mark.parametrize("name", list(SEED_HELPERS))
def test_the_seed_helpers_are_coroutines_with_the_same_parameters_on_the_async_sessions(
    async_class: type[Any], name: str
) -> None:
    helper = getattr(async_class, name, None)
    assert helper is not None, f"{async_class.__name__} lacks {name}"
    assert is_awaited(helper)
    assert shape(helper) == shape(SEED_HELPERS[name])
