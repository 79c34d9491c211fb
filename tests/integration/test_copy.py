"""bulk_create(return_objects=False) through COPY on PostgreSQL (psycopg 3).

COPY is part of the block's transaction like any write: lazy BEGIN goes before it, a failure
takes none of its rows and leaves the block usable, and what it stores is what an INSERT stores
(Python defaults, type processing, NULLs, rows with different keys). The statements are read
from the server's log (tests/server_log.py): SQLAlchemy's events never see a COPY.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Integer,
    LargeBinary,
    Numeric,
    String,
    TypeDecorator,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import Repository
from tests.conftest import reset_postgres
from tests.integration.helpers import BEFORE_AND_AFTER, Boom, stored
from tests.models import AppUnitOfWork, Base, User
from tests.server_log import server_statements, wire_database
from uow import Database, UnitOfWork
from uow.testing import count_statements

COPY_USERS = "COPY users (email, name, age) FROM STDIN"


@pytest.fixture
def wired() -> Iterator[tuple[Database, str]]:
    """A PostgreSQL Database with the test tables, whose statements the server log shows."""
    db, name = wire_database()
    reset_postgres(db)
    db.create_all(Base.metadata)
    db.create_all(TypesBase.metadata)
    with AppUnitOfWork(db) as uow:
        uow.users.count()  # a warm pool: no connect-time queries in what a test reads
    yield db, name
    db.s.remove()
    reset_postgres(db)
    db.dispose()


def users(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"email": f"u{n:05d}@example.com", "name": f"User {n}", "age": n % 90}
        for n in range(start, start + count)
    ]


def first_words(statements: list[str]) -> list[str]:
    return [statement.split()[0] for statement in statements]


# -- on the wire -------------------------------------------------------------------------------


def test_as_the_first_write_copy_is_begun_and_committed_with_nothing_else(
    wired: tuple[Database, str],
) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        assert uow.users.bulk_create(users(1000), return_objects=False) == []
    assert sent == ["BEGIN", COPY_USERS, "COMMIT"]
    assert len(stored(db)) == 1000


def test_after_earlier_writes_copy_runs_inside_one_savepoint(wired: tuple[Database, str]) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with server_statements(name) as sent, uow:
        uow.users.create(email="before@example.com", name="Before")
        uow.users.bulk_create(users(10), return_objects=False)
    assert first_words(sent) == ["BEGIN", "INSERT", "SAVEPOINT", "COPY", "RELEASE", "COMMIT"]
    assert sent[3] == COPY_USERS


def test_each_batch_and_each_run_of_rows_with_the_same_keys_is_one_copy(
    wired: tuple[Database, str],
) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    rows: list[dict[str, Any]] = [
        *users(3),
        {"email": "noage1@example.com", "name": "No age"},
        {"email": "noage2@example.com", "name": "No age"},
        *users(2, start=3),
    ]
    with server_statements(name) as sent, uow:
        uow.users.bulk_create(rows, return_objects=False)
        uow.users.bulk_create(users(5, start=10), batch_size=2, return_objects=False)
    copies = [s for s in sent if s.startswith("COPY")]
    assert copies == [
        COPY_USERS,
        "COPY users (email, name) FROM STDIN",
        COPY_USERS,
        *[COPY_USERS] * 3,  # 5 rows in batches of 2
    ]
    assert stored(db)["noage1@example.com"] == ("No age", None)
    assert stored(db)["u00004@example.com"] == ("User 4", 4)
    assert len(stored(db)) == 12


def test_copy_is_part_of_the_blocks_transaction(wired: tuple[Database, str]) -> None:
    db, _ = wired
    uow = AppUnitOfWork(db)
    with pytest.raises(Boom), uow:
        uow.users.bulk_create(users(10), return_objects=False)
        assert uow.users.count() == 10  # visible inside the block
        raise Boom
    assert stored(db) == {}


def test_copy_works_with_lazy_begin_turned_off(wired: tuple[Database, str]) -> None:
    db, _ = wired
    eager = Database(db.url, lazy_begin=False)
    uow = AppUnitOfWork(eager)
    try:
        with pytest.raises(Boom), uow:
            uow.users.bulk_create(users(5), return_objects=False)
            raise Boom
        with uow:
            uow.users.bulk_create(users(5), return_objects=False)
    finally:
        eager.dispose()
    assert len(stored(db)) == 5


def test_sqlalchemy_events_do_not_see_copy_so_sqlite_and_insert_paths_are_unchanged(
    wired: tuple[Database, str], tmp_path: Path
) -> None:
    db, _ = wired
    with count_statements(db.engine) as log, AppUnitOfWork(db) as uow:
        uow.users.bulk_create(users(10), return_objects=False)
    assert log.matching("INSERT") == []
    lite = Database(f"sqlite:///{tmp_path / 'copy.db'}")
    lite.create_all(Base.metadata)
    try:
        with count_statements(lite.engine) as log, AppUnitOfWork(lite) as uow:
            uow.users.bulk_create(users(10), return_objects=False)
        assert len(log.matching("INSERT")) == 1  # SQLite keeps executemany
        assert len(stored(lite)) == 10
    finally:
        lite.dispose()


# -- errors: nothing stays, the block goes on ---------------------------------------------------


@pytest.mark.parametrize("earlier_write", [False, True], ids=["first write", "after a write"])
def test_a_unique_violation_in_copy_raises_integrity_error_and_leaves_the_block_usable(
    wired: tuple[Database, str], earlier_write: bool
) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    with AppUnitOfWork(db) as seeding:
        seeding.users.create(email="taken@example.com", name="Taken")
    rows = users(500)
    rows[400] = {"email": "taken@example.com", "name": "Twin", "age": 1}
    with server_statements(name) as sent, uow:
        if earlier_write:
            uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(IntegrityError) as caught:
            uow.users.bulk_create(rows, batch_size=100, return_objects=False)
        assert type(caught.value.orig).__name__ == "UniqueViolation"
        assert "COPY" in str(caught.value)
        assert uow.users.count() == (2 if earlier_write else 1)
        uow.users.create(email="after@example.com", name="After")
    expected = {"taken@example.com": ("Taken", None), "after@example.com": ("After", None)}
    if earlier_write:
        expected["before@example.com"] = ("Before", None)
    assert stored(db) == expected
    copies = ["COPY"] * 5  # the fifth batch fails
    if earlier_write:
        protected = ["BEGIN", "INSERT", "SAVEPOINT", *copies, "ROLLBACK", "RELEASE", "SELECT"]
        assert first_words(sent) == [*protected, "INSERT", "COMMIT"]
    else:  # no savepoint: the transaction begun for the COPY is rolled back, the block goes on
        assert first_words(sent) == [
            "BEGIN",
            *copies,
            "ROLLBACK",
            "SELECT",
            "BEGIN",
            "INSERT",
            "COMMIT",
        ]


def test_a_failing_default_in_a_later_run_takes_the_earlier_copies_back_out(
    wired: tuple[Database, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _ = wired
    uow = TypesUnitOfWork(db)
    monkeypatch.setattr(Flaky, "calls", itertools.count())
    monkeypatch.setattr(Flaky, "fail_at", 1)  # the second row that leaves `computed` out
    rows: list[dict[str, Any]] = [{"label": "given", "computed": "given"}] * 3 + [{}] * 3
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(Boom):
            uow.defaults.bulk_create(rows, return_objects=False)  # a COPY per run: 2
        assert uow.defaults.count() == 0
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == BEFORE_AND_AFTER


# -- what COPY stores is what an INSERT stores --------------------------------------------------


class TypesBase(DeclarativeBase):
    pass


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Upper(TypeDecorator[str]):
    """A type whose bind processing COPY must apply too."""

    impl = String(50)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else value.upper()


def tag_from_label(context: Any) -> str:
    """A context-sensitive default: built from the row's other values."""
    return f"tag:{context.get_current_parameters()['label']}"


class Kinds(TypesBase):
    __tablename__ = "copy_kinds"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(50))
    day: Mapped[dt.date | None]
    moment: Mapped[dt.datetime | None] = mapped_column(default=None)
    aware: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    span: Mapped[dt.timedelta | None]
    amount: Mapped[decimal.Decimal | None] = mapped_column(Numeric(10, 2))
    ratio: Mapped[float | None]
    flag: Mapped[bool | None]
    mood: Mapped[Mood | None] = mapped_column(Enum(Mood))
    token: Mapped[uuid.UUID | None]
    document: Mapped[Any] = mapped_column(JSON, nullable=True)
    binary_document: Mapped[Any] = mapped_column(JSONB, nullable=True)
    numbers: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    shout: Mapped[str | None] = mapped_column(Upper)
    # Python defaults, which COPY must compute as an INSERT does; and a server default.
    score: Mapped[int] = mapped_column(default=7)
    ref: Mapped[uuid.UUID] = mapped_column(default=uuid.uuid4)
    tag: Mapped[str] = mapped_column(String(60), default=tag_from_label)
    created: Mapped[str] = mapped_column(String(20), server_default="server")


class Flaky:
    """A Python default that raises on its call number `fail_at` (counting from 0)."""

    fail_at: int | None = None
    calls = itertools.count()

    @classmethod
    def value(cls) -> str:
        if next(cls.calls) == cls.fail_at:
            raise Boom
        return "computed"


class Defaults(TypesBase):
    __tablename__ = "copy_defaults"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str | None] = mapped_column(String(50))
    computed: Mapped[str] = mapped_column(String(50), default=Flaky.value)


class SqlDefault(TypesBase):
    __tablename__ = "copy_sql_default"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(50))
    stamped: Mapped[dt.datetime] = mapped_column(default=func.now())


class Renamed(TypesBase):
    """Attributes named apart from their columns, one of which needs quoting."""

    __tablename__ = "copy renamed"

    id: Mapped[int] = mapped_column("key", primary_key=True)
    shown: Mapped[str] = mapped_column("Shown Name", String(50))
    order: Mapped[int] = mapped_column("order", default=3)


class TypesUnitOfWork(UnitOfWork):
    users: Repository[User]
    renamed: Repository[Renamed]
    kinds: Repository[Kinds]
    defaults: Repository[Defaults]
    sql_defaults: Repository[SqlDefault]


KIND_ROWS: list[dict[str, Any]] = [
    {
        "label": "full",
        "day": dt.date(2024, 2, 29),
        "moment": dt.datetime(2024, 2, 29, 13, 45, 6, 789),
        "aware": dt.datetime(2024, 2, 29, 13, 45, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "span": dt.timedelta(days=1, seconds=5),
        "amount": decimal.Decimal("12.34"),
        "ratio": 0.5,
        "flag": True,
        "mood": Mood.SAD,
        "token": uuid.UUID(int=1),
        "document": {"a": [1, "two", None], "tab\tnewline\n": "back\\slash"},
        "binary_document": [1, {"b": True}],
        "numbers": [1, 2, 3],
        "blob": b"\x00\x01\\\n",
        "shout": "quiet",
        "score": 1,
        "ref": uuid.UUID(int=2),
        "tag": "given",
    },
    # Explicit None everywhere a None is allowed: NULL (JSON's None is JSON null, as INSERT).
    {
        "label": "nones",
        "day": None,
        "moment": None,
        "aware": None,
        "span": None,
        "amount": None,
        "ratio": None,
        "flag": None,
        "mood": None,
        "token": None,
        "document": None,
        "binary_document": None,
        "numbers": None,
        "blob": None,
        "shout": None,
    },
    # Left out: NULL, or the Python default, or the server default.
    {"label": "sparse", "flag": False, "document": "just a string"},
    {"label": "sparse too", "numbers": []},
]


def stored_kinds(db: Database) -> list[tuple[Any, ...]]:
    """Every column but the generated ones, ordered by label, and whether each JSON value is
    SQL NULL (Python's None reads back as None from JSON null too)."""
    table = Kinds.__table__
    columns = [c for c in table.c if c.name not in ("id", "ref")]
    nulls = [text("document IS NULL"), text("binary_document IS NULL")]
    with db.Session() as session:
        rows = session.execute(select(*columns, *nulls).order_by(table.c.label)).all()
        refs = session.scalars(select(table.c.ref).order_by(table.c.label)).all()
    assert all(isinstance(ref, uuid.UUID) for ref in refs)
    return [tuple(row) for row in rows]


def test_copy_stores_exactly_what_an_insert_stores(wired: tuple[Database, str]) -> None:
    db, name = wired
    uow = TypesUnitOfWork(db)
    with uow:
        uow.kinds.bulk_create([dict(row) for row in KIND_ROWS])  # INSERT ... RETURNING
    inserted = stored_kinds(db)
    with uow:
        uow.kinds.filter().delete()
    with server_statements(name) as sent, uow:
        uow.kinds.bulk_create([dict(row) for row in KIND_ROWS], return_objects=False)
    assert first_words(sent) == ["BEGIN", *["COPY"] * 4, "COMMIT"]  # 4 key sets
    copied = stored_kinds(db)
    assert copied == inserted
    by_label = {row[0]: row for row in copied}
    columns = [c.name for c in Kinds.__table__.c if c.name not in ("id", "ref")]
    columns += ["document is NULL", "binary_document is NULL"]
    sparse = dict(zip(columns, by_label["sparse"], strict=True))
    assert (sparse["score"], sparse["tag"], sparse["created"]) == (7, "tag:sparse", "server")
    assert sparse["document"] == "just a string"
    full = dict(zip(columns, by_label["full"], strict=True))
    assert (full["shout"], full["mood"], full["tag"]) == ("QUIET", Mood.SAD, "given")
    nones = dict(zip(columns, by_label["nones"], strict=True))
    assert nones["blob"] is None
    assert nones["numbers"] is None
    # None given for a JSON column is JSON null, as INSERT stores it; left out, SQL NULL.
    assert (nones["document is NULL"], nones["binary_document is NULL"]) == (False, False)
    assert (sparse["document is NULL"], sparse["binary_document is NULL"]) == (False, True)


def test_a_model_with_an_sql_default_keeps_the_insert(wired: tuple[Database, str]) -> None:
    db, name = wired
    uow = TypesUnitOfWork(db)
    with server_statements(name) as sent, uow:
        uow.sql_defaults.bulk_create([{"label": "a"}, {"label": "b"}], return_objects=False)
        assert all(row.stamped is not None for row in uow.sql_defaults.all())
    assert not any(s.startswith("COPY") for s in sent)
    assert any(s.startswith("INSERT INTO copy_sql_default") for s in sent)


def test_columns_named_apart_from_their_attributes_are_quoted_and_filled(
    wired: tuple[Database, str],
) -> None:
    db, name = wired
    uow = TypesUnitOfWork(db)
    with server_statements(name) as sent, uow:
        uow.renamed.bulk_create([{"shown": "a"}, {"shown": "b", "order": 1}], return_objects=False)
    assert 'COPY "copy renamed" ("Shown Name", "order") FROM STDIN' in sent
    with uow:
        assert sorted((r.shown, r.order) for r in uow.renamed.all()) == [("a", 3), ("b", 1)]
