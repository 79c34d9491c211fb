"""iterator()'s loader: the objects it builds from rows are the ORM's own, on SQLite and PostgreSQL.

Models with plain columns and lazy relationships are built from the rows directly
(repositories/_streaming.py); everything else, and sessions with listeners that may rewrite a
statement, goes through SQLAlchemy's loader. Both must give the same objects.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    ForeignKey,
    Numeric,
    String,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    column_property,
    deferred,
    mapped_column,
    reconstructor,
    relationship,
    with_loader_criteria,
)

from repositories import Repository
from repositories._streaming import _loader_for
from tests.models import AppUnitOfWork, Membership, Post, User
from uow import Database
from uow.testing import count_statements

pytestmark = [pytest.mark.both_faces, pytest.mark.through_pgbouncer]


class Base(DeclarativeBase):
    pass


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Typed(Base):
    """Columns whose values the driver hands over raw and SQLAlchemy converts."""

    __tablename__ = "stream_typed"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    colour: Mapped[Colour] = mapped_column(Enum(Colour))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    flag: Mapped[bool]
    note: Mapped[str | None] = mapped_column("remark", String(50))  # named apart from its column


class Deferred(Base):
    __tablename__ = "stream_deferred"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = deferred(mapped_column(String(50)))


class Computed(Base):
    __tablename__ = "stream_computed"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    shout: Mapped[str] = column_property(func.upper(name))


class Eager(Base):
    __tablename__ = "stream_eager"
    id: Mapped[int] = mapped_column(primary_key=True)
    children: Mapped[list[EagerChild]] = relationship(lazy="selectin")


class EagerChild(Base):
    __tablename__ = "stream_eager_child"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("stream_eager.id"))


class Reconstructed(Base):
    __tablename__ = "stream_reconstructed"
    id: Mapped[int] = mapped_column(primary_key=True)

    @reconstructor
    def _loaded(self) -> None:
        self.loaded = True


class Animal(Base):
    __tablename__ = "stream_animals"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "animal"}  # noqa: RUF012


class Dog(Animal):
    __mapper_args__ = {"polymorphic_identity": "dog"}  # noqa: RUF012


def _users(uow: AppUnitOfWork, count: int) -> None:
    with uow:
        for i in range(count):
            uow.users.create(email=f"u{i}@example.com", name=f"U{i}", age=i)


def test_plain_models_take_the_direct_loader_and_the_others_the_orm() -> None:
    for model in (User, Post, Membership, Typed):
        assert _loader_for(inspect(model)) is not None, model
    for model in (Deferred, Computed, Eager, Reconstructed, Animal, Dog):
        assert _loader_for(inspect(model)) is None, model


def test_streamed_objects_belong_to_the_session_and_their_changes_are_committed(
    db: Database, uow: AppUnitOfWork
) -> None:
    _users(uow, 30)
    with uow, count_statements(db.engine) as log:
        streamed = list(uow.users.filter(age__lt=10).order_by("age").iterator(chunk_size=4))
        assert [u.email for u in streamed] == [f"u{i}@example.com" for i in range(10)]
        first = streamed[0]
        assert inspect(first).persistent
        assert uow.session.get(User, first.id) is first  # from the identity map, no SQL
        assert len(log.matching("SELECT")) == 1
        first.name = "Changed"
        assert first in uow.session.dirty
    with uow:
        assert uow.users.get(first.id).name == "Changed"  # type: ignore[union-attr]


def test_an_object_already_in_the_session_keeps_its_unflushed_changes(
    uow: AppUnitOfWork,
) -> None:
    _users(uow, 3)
    with uow:
        held = uow.users.one(email="u1@example.com")
        with uow.session.no_autoflush:
            held.name = "Pending"
            streamed = {u.email: u for u in uow.users.iterator(chunk_size=2)}
        assert streamed["u1@example.com"] is held
        assert held.name == "Pending"


def test_an_expired_object_is_refreshed_from_its_streamed_row_without_another_select(
    db: Database, uow: AppUnitOfWork
) -> None:
    _users(uow, 3)
    with uow:
        held = uow.users.one(email="u1@example.com")
        uow.session.execute(update(User).where(User.id == held.id).values(name="Renamed"))
        uow.session.expire(held)
        with count_statements(db.engine) as log:
            streamed = [u for u in uow.users.iterator() if u.email == "u1@example.com"]
            assert streamed == [held]
            assert held.name == "Renamed"
        assert len(log.matching("SELECT")) == 1
        assert inspect(held).expired_attributes == {"posts"}  # as the ORM leaves it


def test_objects_added_before_the_stream_are_flushed_and_streamed(uow: AppUnitOfWork) -> None:
    with uow:
        uow.session.add(User(email="pending@example.com", name="P"))
        assert [u.email for u in uow.users.iterator()] == ["pending@example.com"]


def test_lazy_relationships_of_streamed_objects_load(uow: AppUnitOfWork) -> None:
    with uow:
        ada = uow.users.create(email="ada@example.com", name="Ada")
        uow.posts.create(title="On engines", author=ada)
        uow.memberships.create(user_id=ada.id, group="admins")
    with uow:
        (post,) = uow.posts.iterator()
        assert post.author.email == "ada@example.com"
        (author,) = uow.users.iterator()
        assert author is post.author
        assert [p.title for p in author.posts] == ["On engines"]
        (membership,) = uow.memberships.iterator()
        assert uow.session.get(Membership, (ada.id, "admins")) is membership
        assert membership.role == "member"


def test_converted_column_types_stream_as_the_orm_loads_them(db: Database) -> None:
    Base.metadata.create_all(db.engine, tables=[Typed.__table__])  # type: ignore[list-item]
    at = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    with db.Session() as session, session.begin():
        session.add_all(
            Typed(at=at, price=Decimal("1.50"), colour=c, data={"n": i}, flag=i % 2 == 0)
            for i, c in enumerate([Colour.RED, Colour.BLUE, Colour.RED])
        )
        session.add(
            Typed(at=at, price=Decimal(0), colour=Colour.BLUE, data={}, flag=True, note="x")
        )
    with db.Session() as session:
        loaded = [_values(t) for t in session.scalars(select(Typed).order_by(Typed.id))]
    with db.Session() as session:
        streamed = [_values(t) for t in Repository(session, Typed).filter().iterator(2)]
    assert streamed == loaded
    assert streamed[0]["colour"] is Colour.RED
    assert streamed[-1]["note"] == "x"


def _values(obj: Any) -> dict[str, Any]:
    return {prop.key: getattr(obj, prop.key) for prop in inspect(obj).mapper.column_attrs}


@pytest.mark.parametrize("model", [Deferred, Computed, Eager, Reconstructed, Animal])
def test_models_the_direct_loader_leaves_to_the_orm_stream_the_same(
    db: Database, model: type[Base]
) -> None:
    Base.metadata.create_all(db.engine)
    with db.engine.begin() as connection:
        table = model.__table__.name  # type: ignore[attr-defined]
        columns = {
            "stream_deferred": "(id, body) VALUES (1, 'a'), (2, 'b')",
            "stream_computed": "(id, name) VALUES (1, 'a'), (2, 'b')",
            "stream_eager": "(id) VALUES (1), (2)",
            "stream_reconstructed": "(id) VALUES (1), (2)",
            "stream_animals": "(id, kind) VALUES (1, 'animal'), (2, 'dog')",
        }[table]
        connection.execute(text(f"INSERT INTO {table} {columns}"))
    with db.Session() as session:
        streamed = list(Repository(session, model).filter().order_by("id").iterator(1))
        streamed_values = [(type(obj), _values(obj)) for obj in streamed]
    with db.Session() as session:
        loaded = session.scalars(select(model).order_by(model.id))  # type: ignore[attr-defined]
        assert streamed_values == [(type(obj), _values(obj)) for obj in loaded]
    if model is Reconstructed:
        assert all(obj.loaded for obj in streamed)  # type: ignore[attr-defined]
    if model is Animal:
        assert [type(obj) for obj in streamed] == [Animal, Dog]


def test_a_load_listener_added_after_a_first_stream_is_called_for_each_object(
    uow: AppUnitOfWork,
) -> None:
    _users(uow, 3)
    loaded: list[str] = []

    def on_load(user: User, _context: Any) -> None:
        loaded.append(user.email)

    with uow:
        assert len(list(uow.users.iterator())) == 3  # the direct loader, cached for User
    event.listen(User, "load", on_load)
    try:
        with uow:
            assert len(list(uow.users.iterator())) == 3
    finally:
        event.remove(User, "load", on_load)
    assert sorted(loaded) == ["u0@example.com", "u1@example.com", "u2@example.com"]


@pytest.mark.sync_only(reason="listens on the sync session")
def test_a_session_whose_listener_adds_loader_criteria_streams_through_the_orm(
    db: Database, uow: AppUnitOfWork
) -> None:
    _users(uow, 6)

    def adults_only(state: Any) -> None:
        if state.is_select:
            state.statement = state.statement.options(
                with_loader_criteria(User, User.age >= 3)  # type: ignore[operator]
            )

    with uow:
        event.listen(uow.session, "do_orm_execute", adults_only)
        try:
            assert sorted(u.age for u in uow.users.iterator()) == [3, 4, 5]  # type: ignore[type-var]
        finally:
            event.remove(uow.session, "do_orm_execute", adults_only)


@pytest.mark.xfail_face(
    "asyncpg",
    reason="SQLAlchemy's asyncpg server-side cursor close() only drops the asyncpg cursor: "
    "its portal stays open until the transaction ends (and asyncpg's own SELECT from "
    "pg_cursors is listed there too)",
)
def test_a_stream_left_early_closes_its_cursor(
    db: Database, uow: AppUnitOfWork, backend: str
) -> None:
    _users(uow, 50)
    with uow:
        stream = uow.users.iterator(chunk_size=10)
        assert next(stream).email == "u0@example.com"
        stream.close()  # type: ignore[attr-defined]
        if backend == "postgresql":
            assert uow.session.scalar(text("SELECT count(*) FROM pg_cursors")) == 0
        assert uow.users.count() == 50
