"""get() and first() read a plain model's row into an object directly: the ORM's objects, still.

For a model with plain columns and lazy relationships, on a session without `do_orm_execute`
or `loaded_as_persistent` listeners, `Repository.get` and `Query.first` build the object from
the row themselves (repositories/_streaming.py, the loader `iterator()` uses) instead of going
through SQLAlchemy's general loader. Everything here must behave exactly as the ORM does.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, inspect, select, text, update
from sqlalchemy.orm import (
    with_loader_criteria,
)

from repositories import Repository
from repositories._streaming import plain_loader

# Model shapes the plain-row loader leaves to the ORM, shared with the streaming tests.
from tests.integration.test_streaming import Animal, Base, Computed, Deferred, Dog, Reconstructed
from tests.models import AppUnitOfWork, Post, User
from uow import Database
from uow.testing import count_statements

pytestmark = [pytest.mark.both_faces]


def _users(uow: AppUnitOfWork, count: int) -> list[int]:
    with uow:
        return [
            uow.users.create(email=f"u{i}@example.com", name=f"U{i}", age=i).id
            for i in range(count)
        ]


def test_the_direct_path_is_taken_for_a_plain_model_on_a_plain_session(db: Database) -> None:
    with db.Session() as session:
        sync_session = getattr(session, "sync_session", session)
        assert plain_loader(sync_session, User) is not None
        assert plain_loader(sync_session, Deferred) is None
        listened = db.Session()
        sync_listened = getattr(listened, "sync_session", listened)
        event.listen(sync_listened, "do_orm_execute", lambda state: None)
        assert plain_loader(sync_listened, User) is None


def test_objects_read_belong_to_the_session_and_their_changes_are_committed(
    db: Database, uow: AppUnitOfWork
) -> None:
    ids = _users(uow, 3)
    with uow, count_statements(db.engine) as log:
        by_key = uow.users.get(ids[1])
        assert by_key is not None
        assert inspect(by_key).persistent
        assert uow.users.first(email="u1@example.com") is by_key
        assert uow.session.get(User, ids[1]) is by_key  # from the identity map, no SQL
        assert uow.users.get(ids[1]) is by_key  # no SQL either
        first = uow.users.first(email="u2@example.com")
        assert first is not None
        assert inspect(first).persistent
        assert uow.session.get(User, ids[2]) is first
        assert len(log.matching("SELECT")) == 3
        by_key.name = "Changed"
        first.age = 99
        assert by_key in uow.session.dirty
    with uow:
        assert uow.users.one(email="u1@example.com").name == "Changed"
        assert uow.users.one(email="u2@example.com").age == 99


def test_what_is_not_there_is_none(uow: AppUnitOfWork) -> None:
    ids = _users(uow, 1)
    with uow:
        assert uow.users.get(ids[0] + 1000) is None
        assert uow.users.first(email="nobody@example.com") is None
        assert uow.memberships.get((ids[0], "nobody")) is None


def test_an_object_already_in_the_session_keeps_its_unflushed_changes(
    uow: AppUnitOfWork,
) -> None:
    _users(uow, 3)
    with uow:
        held = uow.users.one(email="u1@example.com")
        with uow.session.no_autoflush:
            held.name = "Pending"
            assert uow.users.first(email="u1@example.com") is held
            assert uow.users.first(name="U1") is held  # the row still says U1
        assert held.name == "Pending"


def test_an_expired_object_is_refreshed_from_its_row_without_another_select(
    db: Database, uow: AppUnitOfWork
) -> None:
    _users(uow, 3)
    with uow:
        held = uow.users.one(email="u1@example.com")
        uow.session.execute(update(User).where(User.id == held.id).values(name="Renamed"))
        uow.session.expire(held)
        with count_statements(db.engine) as log:
            assert uow.users.first(email="u1@example.com") is held
            assert held.name == "Renamed"
        assert len(log.matching("SELECT")) == 1
        assert inspect(held).expired_attributes == {"posts"}  # as the ORM leaves it
        uow.session.expire(held)
        with count_statements(db.engine) as log:
            # Session.get finds it expired in the identity map and refreshes it itself.
            assert uow.users.get(held.id) is held
            assert held.email == "u1@example.com"
        assert len(log.matching("SELECT")) == 1


def test_pending_objects_are_flushed_first(uow: AppUnitOfWork) -> None:
    with uow:
        uow.session.add(User(email="pending@example.com", name="P"))
        found = uow.users.first(email="pending@example.com")
        assert found is not None
        assert found.name == "P"
        uow.session.add(User(id=4242, email="keyed@example.com", name="K"))
        uow.session.flush()
        uow.session.expunge_all()
        keyed = uow.users.get(4242)
        assert keyed is not None
        assert keyed.email == "keyed@example.com"


def test_lazy_relationships_and_composite_keys(uow: AppUnitOfWork) -> None:
    with uow:
        ada = uow.users.create(email="ada@example.com", name="Ada")
        post_id = uow.posts.create(title="On engines", author=ada).id
        uow.memberships.create(user_id=ada.id, group="admins")
        ada_id = ada.id
    with uow:
        post = uow.posts.get(post_id)
        assert post is not None
        assert post.author.email == "ada@example.com"
        author = uow.users.first(email="ada@example.com")
        assert author is post.author
        assert [p.title for p in author.posts] == ["On engines"]
        membership = uow.memberships.get((ada_id, "admins"))
        assert membership is not None
        assert membership.role == "member"
        assert uow.memberships.get({"user_id": ada_id, "group": "admins"}) is membership
        assert uow.memberships.first(group="admins") is membership


def test_the_values_are_the_orms(db: Database, uow: AppUnitOfWork) -> None:
    ids = _users(uow, 2)
    with db.Session() as session:
        sync_session = getattr(session, "sync_session", session)
        loaded = [
            _values(sync_session.scalars(select(User).where(User.id == i)).one()) for i in ids
        ]
    with uow:
        assert [_values(uow.users.get(i)) for i in ids] == loaded
    with uow:
        assert [_values(uow.users.first(id=i)) for i in ids] == loaded


def _values(obj: Any) -> dict[str, Any]:
    return {prop.key: getattr(obj, prop.key) for prop in inspect(obj).mapper.column_attrs}


@pytest.mark.sync_only(reason="reads through a sync Repository on a Session of its own")
@pytest.mark.parametrize("model", [Deferred, Computed, Reconstructed, Animal])
def test_models_left_to_the_orm_read_the_same(db: Database, model: type[Base]) -> None:
    Base.metadata.create_all(db.engine)
    with db.engine.begin() as connection:
        table = model.__table__.name  # type: ignore[attr-defined]
        columns = {
            "stream_deferred": "(id, body) VALUES (1, 'a'), (2, 'b')",
            "stream_computed": "(id, name) VALUES (1, 'a'), (2, 'b')",
            "stream_reconstructed": "(id) VALUES (1), (2)",
            "stream_animals": "(id, kind) VALUES (1, 'animal'), (2, 'dog')",
        }[table]
        connection.execute(text(f"INSERT INTO {table} {columns}"))
    with db.Session() as session:
        repository = Repository(session, model)
        got = [repository.get(1), repository.get(2)]
        firsts = [repository.first(id=1), repository.first(id=2)]
        assert got == firsts
        values = [(type(obj), _values(obj)) for obj in got]
    with db.Session() as session:
        loaded = session.scalars(select(model).order_by(model.id))  # type: ignore[attr-defined]
        assert values == [(type(obj), _values(obj)) for obj in loaded]
    if model is Reconstructed:
        assert all(obj.loaded for obj in got)  # type: ignore[attr-defined]
    if model is Animal:
        assert [type(obj) for obj in got] == [Animal, Dog]


def test_a_load_listener_added_after_a_first_read_is_called(uow: AppUnitOfWork) -> None:
    ids = _users(uow, 2)
    loaded: list[str] = []

    def on_load(user: User, _context: Any) -> None:
        loaded.append(user.email)

    with uow:
        assert uow.users.get(ids[0]) is not None  # the direct path, cached for User
    event.listen(User, "load", on_load)
    try:
        with uow:
            assert uow.users.get(ids[0]) is not None
            assert uow.users.first(email="u1@example.com") is not None
    finally:
        event.remove(User, "load", on_load)
    assert loaded == ["u0@example.com", "u1@example.com"]


@pytest.mark.sync_only(reason="listens on the sync session")
def test_a_session_whose_listener_adds_loader_criteria_reads_through_the_orm(
    uow: AppUnitOfWork,
) -> None:
    ids = _users(uow, 6)

    def adults_only(state: Any) -> None:
        if state.is_select:
            state.statement = state.statement.options(
                with_loader_criteria(User, User.age >= 3)  # type: ignore[operator]
            )

    with uow:
        event.listen(uow.session, "do_orm_execute", adults_only)
        try:
            assert uow.users.get(ids[1]) is None
            assert uow.users.get(ids[4]) is not None
            assert uow.users.first(email="u2@example.com") is None
            first = uow.users.first()
            assert first is not None
            assert first.age == 3
        finally:
            event.remove(uow.session, "do_orm_execute", adults_only)


def test_a_session_with_execution_options_reads_through_the_orm(db: Database) -> None:
    with db.Session() as session:
        sync_session = getattr(session, "sync_session", session)
        sync_session.execution_options = sync_session.execution_options.union(
            {"populate_existing": True}
        )
        assert plain_loader(sync_session, User) is None


def test_posts_are_read_by_the_direct_path_too(uow: AppUnitOfWork) -> None:
    with uow:
        ada = uow.users.create(email="ada@example.com", name="Ada")
        post = uow.posts.create(title="T", author=ada)
        post_id = post.id
    with uow:
        read = uow.posts.get(post_id)
        assert read is not None
        assert (read.title, read.author_id) == ("T", ada.id)
        assert isinstance(read, Post)
