"""A one-row INSERT of a plain model (first_or_create's miss) runs as Core, read into an object.

For a plain model (see test_plain_reads.py) on a plain session, `bulk_create` of one row, and so
the misses of `first_or_create`, `create_or_first`, `get_or_create` and `update_or_create`,
send `INSERT ... RETURNING <columns>` as a Core statement and build the object from the row,
instead of SQLAlchemy's ORM bulk INSERT. The row stored and the object returned must be exactly
what the ORM's bulk INSERT gives: here both paths run side by side (a `do_orm_execute` listener
sends a session through the ORM).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import JSON, String, event, inspect, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import Repository
from repositories._streaming import plain_inserter, plain_loader
from tests.models import AppUnitOfWork, User
from uow import Database
from uow.testing import count_statements

pytestmark = [pytest.mark.both_faces]


class Base(DeclarativeBase):
    pass


class Defaulted(Base):
    __tablename__ = "plain_defaulted"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    count: Mapped[int | None] = mapped_column(default=7)
    data: Mapped[Any] = mapped_column(JSON, nullable=True)  # stores None as JSON null
    label: Mapped[str | None] = mapped_column("label_column", String(20), key="label_key")


class Versioned(Base):
    __tablename__ = "plain_versioned"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


def _through_the_orm(session: Any) -> None:
    event.listen(session, "do_orm_execute", lambda state: None)


def _stored(db: Database, model: type[Base]) -> list[tuple[Any, ...]]:
    table: Any = model.__table__  # type: ignore[attr-defined]
    with db.engine.connect() as connection:
        rows = connection.execute(select(table).order_by(table.c.id))
        return [tuple(row)[1:] for row in rows]  # not the key: the same rows inserted twice


@pytest.mark.sync_only(reason="compares with the ORM's own path on sync sessions")
def test_the_row_and_the_object_are_the_orms(db: Database) -> None:
    Base.metadata.create_all(db.engine)
    given = [
        {"code": "a"},
        {"code": "b", "count": None, "data": None, "label": None},
        {"code": "c", "count": 3, "data": {"n": 1}, "label": "x"},
    ]
    objects: dict[str, list[dict[str, Any]]] = {}
    stored: dict[str, list[tuple[Any, ...]]] = {}
    for path in ("orm", "plain"):
        with db.Session() as session, session.begin():
            if path == "orm":
                _through_the_orm(session)
            assert (plain_loader(session, Defaulted) is None) is (path == "orm")
            repository = Repository(session, Defaulted)
            made = [
                repository.first_or_create(code=values.pop("code"), defaults=values)
                for values in [dict(values) for values in given]
            ]
            assert all(inspect(obj).persistent for obj in made)
            assert [session.get(Defaulted, obj.id) for obj in made] == made
            objects[path] = [_values(obj) for obj in made]
        stored[path] = _stored(db, Defaulted)
        with db.engine.begin() as connection:
            connection.execute(Defaulted.__table__.delete())  # type: ignore[attr-defined]
    assert objects["plain"] == objects["orm"]
    assert stored["plain"] == stored["orm"]
    assert [row[1] for row in stored["plain"]] == [7, 7, 3]  # None leaves the default to apply


def _values(obj: Any) -> dict[str, Any]:
    values = {prop.key: getattr(obj, prop.key) for prop in inspect(obj).mapper.column_attrs}
    values.pop("id")  # the same rows, inserted twice: other keys
    return values


@pytest.mark.sync_only(reason="builds Repository objects on sync sessions")
def test_a_model_with_a_version_counter_is_inserted_by_the_orm(db: Database) -> None:
    Base.metadata.create_all(db.engine)
    with db.Session() as session, session.begin():
        assert plain_loader(session, Versioned) is not None
        assert plain_inserter(session, Versioned) is None
        made = Repository(session, Versioned).first_or_create(code="v")
        assert made.version == 1
    assert _stored(db, Versioned) == [("v", 1)]


def test_the_object_belongs_to_the_session_and_a_conflict_returns_the_existing_row(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        with count_statements(db.engine) as log:
            ada = uow.users.first_or_create(email="ada@example.com", defaults={"name": "Ada"})
        assert len(log.matching("INSERT")) == 1
        assert inspect(ada).persistent
        assert uow.session.get(User, ada.id) is ada
        assert uow.users.create_or_first(email="ada@example.com", defaults={"name": "X"}) is ada
        ada.age = 36
    with uow:
        again, created = uow.users.get_or_create(email="ada@example.com")
        assert not created
        assert (again.name, again.age) == ("Ada", 36)
        (one,) = uow.users.bulk_create([{"email": "bob@example.com", "name": "Bob"}])
        assert uow.session.get(User, one.id) is one
        assert (
            uow.users.bulk_create(
                [{"email": "bob@example.com", "name": "B"}], ignore_conflicts=True
            )
            == []
        )
    with uow:
        assert sorted(u.email for u in uow.users.all()) == ["ada@example.com", "bob@example.com"]
