"""Lazy BEGIN's edges: statements that only look like reads, connections that want no
transaction, errors the server never saw, and model shapes the ON CONFLICT path cannot insert.

Each test here began as a failing reproduction from a review of lazy BEGIN and ON CONFLICT.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import ForeignKey, String, UniqueConstraint, func, insert, select, text
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from repositories import Repository
from tests.conftest import postgres_url, reset_postgres
from tests.integration.helpers import committed_emails
from tests.models import AppUnitOfWork, Base, User
from tests.server_log import server_statements, wire_database
from uow import Database, UnitOfWork

# -- PostgreSQL: statements that only look like reads -------------------------------------------


@pytest.fixture
def pg() -> Iterator[Database]:
    db = Database(postgres_url())
    reset_postgres(db)
    db.create_all(Base.metadata)
    yield db
    db.s.remove()
    reset_postgres(db)
    db.dispose()


def test_a_select_that_sets_transaction_state_runs_inside_the_transaction(pg: Database) -> None:
    uow = AppUnitOfWork(pg)
    with uow:
        uow.session.execute(select(func.set_config("app.tenant", "42", True)))  # SET LOCAL
        seen = uow.session.execute(select(func.current_setting("app.tenant", True))).scalar()
    assert seen == "42"


def test_a_transaction_scoped_lock_taken_by_a_select_is_held_until_the_block_ends(
    pg: Database,
) -> None:
    uow = AppUnitOfWork(pg)
    with uow:
        uow.session.execute(select(func.pg_advisory_xact_lock(7)))
        with pg.engine.connect() as other:
            assert other.execute(select(func.pg_try_advisory_lock(7))).scalar() is False


def test_a_select_of_a_function_that_writes_is_rolled_back_with_its_block(pg: Database) -> None:
    with pg.engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE FUNCTION add_user(e text) RETURNS int LANGUAGE sql AS "
            "$$ INSERT INTO users (email, name) VALUES (e, 'via function') RETURNING id $$"
        )
    uow = AppUnitOfWork(pg)
    with contextlib.suppress(KeyError), uow:
        uow.session.execute(select(func.add_user("fn@example.com")))
        raise KeyError("the block fails")
    assert committed_emails(pg) == set()


def test_a_data_modifying_cte_is_rolled_back_with_its_block(pg: Database) -> None:
    uow = AppUnitOfWork(pg)
    inserted = insert(User).values(email="cte@example.com", name="CTE").returning(User.id)
    with uow:
        uow.session.execute(select(inserted.cte("inserted").c.id))
        uow.set_rollback(True)
    assert committed_emails(pg) == set()


def test_a_connection_in_autocommit_gets_no_begin(pg: Database) -> None:
    with pg.engine.connect() as connection:
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.exec_driver_sql("VACUUM users")  # refused inside a transaction block


def test_an_error_the_server_never_saw_does_not_refuse_the_commit(pg: Database) -> None:
    uow = AppUnitOfWork(pg)
    with uow:
        uow.users.create(email="kept@example.com", name="Kept")
        with pytest.raises(ProgrammingError):  # psycopg cannot send it: nothing was aborted
            uow.session.execute(text("SELECT :value"), {"value": object()})
    assert committed_emails(pg) == {"kept@example.com"}


def test_a_refused_commit_leaves_a_plain_connection_usable(pg: Database) -> None:
    with pg.engine.connect() as connection:
        connection.execute(insert(User).values(email="lost@example.com", name="Lost"))
        with pytest.raises(IntegrityError):
            connection.execute(insert(User).values(email="lost@example.com", name="Twin"))
        with pytest.raises(Exception, match="nothing was committed"):
            connection.commit()
        connection.rollback()
        connection.execute(insert(User).values(email="next@example.com", name="Next"))
        connection.commit()
    assert committed_emails(pg) == {"next@example.com"}


def test_a_server_default_of_repeatable_read_makes_begin_eager(pg: Database) -> None:
    options = {"options": "-c default_transaction_isolation=repeatable\\ read"}
    db = Database(postgres_url(), engine_options={"connect_args": options})
    uow = AppUnitOfWork(db)
    try:
        with uow:
            assert uow.users.count() == 0
            with pg.Session() as other, other.begin():
                other.add(User(email="bob@example.com", name="Bob"))
            assert uow.users.count() == 0  # one snapshot, taken by the first statement
    finally:
        db.dispose()


# -- both databases: the update of update_or_create, callables, model shapes --------------------


def test_a_failed_update_in_update_or_create_as_the_first_write_leaves_the_block_usable(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        uow.users.create(email="ada@example.com", name="Ada")
        uow.users.create(email="bob@example.com", name="Bob")
    with uow:
        with pytest.raises(IntegrityError):
            uow.users.update_or_create(
                email="bob@example.com", defaults={"email": "ada@example.com"}
            )
        uow.users.create(email="carl@example.com", name="Carl")
    assert committed_emails(db) == {"ada@example.com", "bob@example.com", "carl@example.com"}


def test_a_default_that_attrs_override_is_not_called(db: Database, uow: AppUnitOfWork) -> None:
    calls: list[str] = []

    def name() -> str:
        calls.append("called")
        return "Default"

    with uow:
        uow.users.first_or_create(email="ada@example.com", name="Ada", defaults={"name": name})
    assert calls == []


class ShapesBase(DeclarativeBase):
    pass


class Animal(ShapesBase):
    __tablename__ = "animals"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(50), unique=True)
    __mapper_args__: ClassVar[dict[str, Any]] = {
        "polymorphic_on": "kind",
        "polymorphic_identity": "animal",
    }


class Dog(Animal):
    __tablename__ = "dogs"
    id: Mapped[int] = mapped_column(ForeignKey("animals.id"), primary_key=True)
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "dog"}


class Cat(Animal):  # single-table inheritance
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "cat"}


class Author(ShapesBase):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(ShapesBase):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50), unique=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


class ShapesUnitOfWork(UnitOfWork):
    dogs: Repository[Dog]
    cats: Repository[Cat]
    authors: Repository[Author]
    books: Repository[Book]


@pytest.fixture
def shapes(db: Database) -> Iterator[ShapesUnitOfWork]:
    ShapesBase.metadata.create_all(db.engine)
    yield ShapesUnitOfWork(db)
    db.s.remove()
    ShapesBase.metadata.drop_all(db.engine)


def test_the_get_or_create_family_inserts_every_model_shape_a_flush_can(
    shapes: ShapesUnitOfWork,
) -> None:
    uow = shapes
    with uow:
        dog, created = uow.dogs.get_or_create(name="Rex")  # joined inheritance
        assert created
        assert dog.kind == "dog"
        cat = uow.cats.first_or_create(name="Tom")  # single-table inheritance
        assert cat.kind == "cat"
        # A related object that is new: only a flush (its cascade) can save it.
        book = uow.books.first_or_create(title="Emma", defaults={"author": Author(name="Jane")})
        assert book.author.name == "Jane"
        # A collection in the defaults.
        author = uow.authors.create_or_first(name="Mary", defaults={"books": [Book(title="F")]})
        assert [b.title for b in author.books] == ["F"]
        again = uow.books.create_or_first(title="Emma", defaults={"author": author})
        assert again.id == book.id
    with uow:
        assert uow.dogs.count() == 1
        assert uow.books.count() == 2


class DeferrableBase(DeclarativeBase):
    pass


class Ticket(DeferrableBase):
    __tablename__ = "tickets"
    # Checked at once, but DEFERRABLE: PostgreSQL refuses it as an ON CONFLICT arbiter.
    __table_args__ = (UniqueConstraint("code", deferrable=True, initially="IMMEDIATE"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20))


def test_a_table_with_a_deferrable_unique_constraint_still_gets_or_creates(pg: Database) -> None:
    DeferrableBase.metadata.create_all(pg.engine)

    class TicketUnitOfWork(UnitOfWork):
        tickets: Repository[Ticket]

    uow = TicketUnitOfWork(pg)
    with uow:
        first = uow.tickets.first_or_create(code="A1")
        again = uow.tickets.create_or_first(code="A1")
        assert again.id == first.id
        _, created = uow.tickets.get_or_create(code="B2")
        assert created
        _, created = uow.tickets.update_or_create(code="C3")
        assert created


# -- SQLite ----------------------------------------------------------------------------------


def test_a_sqlite_stream_in_a_read_only_block_takes_no_lock(tmp_path: Path) -> None:
    db = Database(
        f"sqlite:///{tmp_path / 'stream.db'}", engine_options={"connect_args": {"timeout": 1}}
    )
    db.create_all(Base.metadata)
    uow = AppUnitOfWork(db)
    with uow:
        uow.users.create(email="ada@example.com", name="Ada")
    writer = sqlite3.connect(tmp_path / "stream.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        with uow:
            assert [u.email for u in uow.users.iterator(10)] == ["ada@example.com"]
    finally:
        writer.close()
        db.dispose()


# -- read-modify-write: select_for_update --------------------------------------------------------


def test_select_for_update_serialises_read_modify_write_blocks(
    db: Database, uow: AppUnitOfWork
) -> None:
    # Plain reads run before the transaction begins (on SQLite, before the write lock), so two
    # blocks may read the same value; select_for_update() takes the lock first.
    with uow:
        uow.users.create(email="counter@example.com", name="Counter", age=0)
    workers, increments = 4, 20
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def increment() -> None:
        barrier.wait()
        try:
            for _ in range(increments):
                with uow:
                    counter = uow.users.filter(email="counter@example.com").select_for_update()
                    user = counter.one()
                    user.age = (user.age or 0) + 1
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=increment) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with uow:
        assert uow.users.one(email="counter@example.com").age == workers * increments


def test_select_for_update_begins_the_transaction_first(pg: Database) -> None:
    db, name = wire_database()
    uow = AppUnitOfWork(db)
    try:
        with uow:
            uow.users.create(email="ada@example.com", name="Ada")
        with server_statements(name) as sent, uow:
            uow.users.filter(email="ada@example.com").select_for_update().first()
        assert [s.split()[0] for s in sent] == ["BEGIN", "SELECT", "COMMIT"]
        assert sent[1].endswith("FOR UPDATE")
    finally:
        db.dispose()
