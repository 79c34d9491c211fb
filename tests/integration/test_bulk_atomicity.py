"""bulk_create is all-or-nothing, and in_bulk refuses a field unique only under a condition, on
SQLite and PostgreSQL (the `db` fixture is parametrized by backend)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Index, String
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import FieldError, Repository
from tests.integration.helpers import BEFORE_AND_AFTER, stored
from tests.models import AppUnitOfWork
from uow import Database
from uow.testing import count_statements

pytestmark = pytest.mark.both_faces

# -- bulk_create: all or nothing ---------------------------------------------------------------

# 1,000 rows in batches of 100 whose 901st row fails: nine batches have gone in by then.
ROWS, BATCH_SIZE, BAD_ROW = 1000, 100, 900

FAILURES = {
    # A unique violation, which ON CONFLICT DO NOTHING would skip, so only without it.
    "duplicate email": ({"email": "before@example.com", "name": "Twin"}, False),
    # NOT NULL is not a conflict: it fails with ignore_conflicts=True as well.
    "null name, ignoring conflicts": ({"email": "null@example.com", "name": None}, True),
}


def rows_failing_at(bad: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"email": f"bulk{i:04d}@example.com", "name": "Bulk"} for i in range(ROWS)
    ]
    rows[BAD_ROW] = bad
    return rows


@pytest.mark.parametrize("return_objects", [True, False], ids=["objects", "no objects"])
@pytest.mark.parametrize(("bad", "ignore_conflicts"), list(FAILURES.values()), ids=list(FAILURES))
def test_a_bulk_create_failing_in_a_later_batch_leaves_none_of_its_rows_and_the_block_usable(
    db: Database,
    uow: AppUnitOfWork,
    bad: dict[str, Any],
    ignore_conflicts: bool,
    return_objects: bool,
) -> None:
    with uow:
        before = uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(IntegrityError):
            uow.users.bulk_create(
                rows_failing_at(bad),
                batch_size=BATCH_SIZE,
                ignore_conflicts=ignore_conflicts,
                return_objects=return_objects,
            )
        assert uow.users.count() == 1
        # The objects of the batches that went in must not outlive their rows in the session:
        # SQLite would give the next row the key one of them holds.
        assert list(uow.session.identity_map.values()) == [before]
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == BEFORE_AND_AFTER


def test_a_bulk_create_after_earlier_writes_sends_one_savepoint_around_all_its_batches(
    db: Database, uow: AppUnitOfWork
) -> None:
    rows = [{"email": f"u{i}@example.com", "name": "N"} for i in range(10)]
    with uow:
        uow.users.create(email="before@example.com", name="Before")  # work to protect
        with count_statements(db.engine) as log:
            created = uow.users.bulk_create(rows, batch_size=3)
        assert [u.email for u in created] == [row["email"] for row in rows]
    assert len(log.matching("SAVEPOINT")) == 1
    assert log.statements[0].startswith("SAVEPOINT")
    assert log.statements[-1].startswith("RELEASE SAVEPOINT")
    inserts = log.matching("INSERT")
    assert len(inserts) >= 4
    assert len(log.statements) == len(inserts) + 2
    assert len(stored(db)) == 11


def test_a_bulk_create_that_is_the_first_write_needs_no_savepoint(
    db: Database, uow: AppUnitOfWork
) -> None:
    # Lazy BEGIN: nothing was written before it, so there is nothing a savepoint would protect.
    rows = [{"email": f"u{i}@example.com", "name": "N"} for i in range(10)]
    with uow:
        uow.users.count()
        with count_statements(db.engine) as log:
            uow.users.bulk_create(rows, batch_size=3)
    assert log.matching("SAVEPOINT") == []
    assert len(log.statements) == len(log.matching("INSERT"))
    assert len(stored(db)) == 10


@pytest.mark.parametrize("earlier_write", [True, False], ids=["after a write", "first write"])
def test_a_failed_bulk_create_leaves_the_block_as_it_was_and_usable(
    db: Database, uow: AppUnitOfWork, earlier_write: bool
) -> None:
    rows = [{"email": f"u{i}@example.com", "name": "N"} for i in range(200)]
    rows[150] = {"email": "u0@example.com", "name": "Twin"}
    with uow:
        if earlier_write:
            uow.users.create(email="before@example.com", name="Before")
        with count_statements(db.engine) as log, pytest.raises(IntegrityError):
            uow.users.bulk_create(rows, batch_size=BATCH_SIZE, return_objects=False)
        uow.users.create(email="after@example.com", name="After")
    # After earlier writes the savepoint is rolled back and released; as the first write,
    # the transaction begun for it is rolled back, with no savepoint at all.
    expected = ["SAVEPOINT", "ROLLBACK", "RELEASE"] if earlier_write else []
    assert [s.split()[0] for s in log.statements if not s.startswith("INSERT")] == expected
    assert set(stored(db)) == ({"before@example.com"} if earlier_write else set()) | {
        "after@example.com"
    }


# -- in_bulk: unique on its own, unconditionally -----------------------------------------------


class LocalBase(DeclarativeBase):
    pass


class Coupon(LocalBase):
    """Codes unique among live coupons only; serials unique always."""

    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20))
    pg_code: Mapped[str] = mapped_column(String(20))
    lite_code: Mapped[str] = mapped_column(String(20))
    serial: Mapped[str] = mapped_column(String(20))
    retired: Mapped[bool] = mapped_column(default=False)


LIVE = Coupon.retired.is_(False)
Index("ix_coupons_code", Coupon.code, unique=True, postgresql_where=LIVE, sqlite_where=LIVE)
# A condition for one dialect is enough: the model says the column may repeat, and in_bulk
# follows the model, not the database it happens to run on.
Index("ix_coupons_pg_code", Coupon.pg_code, unique=True, postgresql_where=LIVE)
Index("ix_coupons_lite_code", Coupon.lite_code, unique=True, sqlite_where=LIVE)
Index("ix_coupons_serial", Coupon.serial, unique=True)


@pytest.fixture
def coupons(db: Database) -> Iterator[None]:
    """The coupons table, holding a live and a retired coupon with the same `code`."""
    LocalBase.metadata.create_all(db.engine)
    try:
        with db.Session() as session, session.begin():
            session.add_all(
                [
                    Coupon(code="SPRING", pg_code="SPRING", lite_code="SPRING", serial="S1"),
                    # On the other database the one-dialect indexes are unconditional.
                    Coupon(code="SPRING", pg_code="P2", lite_code="L2", serial="S2", retired=True),
                ]
            )
        yield
    finally:
        LocalBase.metadata.drop_all(db.engine)


@pytest.mark.usefixtures("coupons")
@pytest.mark.parametrize("field_name", ["code", "pg_code", "lite_code"])
def test_in_bulk_refuses_a_field_unique_only_under_a_partial_index_before_sql(
    db: Database, uow: AppUnitOfWork, field_name: str
) -> None:
    with uow, count_statements(db.engine) as log:
        with pytest.raises(FieldError, match=rf"Coupon\.{field_name}") as info:
            # Both coupons have code SPRING: a {code: coupon} dict would silently keep one.
            Repository(uow.session, Coupon).in_bulk(["SPRING"], field_name=field_name)
    assert log.statements == []
    assert "only under a condition" in str(info.value)
    assert f"ix_coupons_{field_name}" in str(info.value)


@pytest.mark.usefixtures("coupons")
def test_in_bulk_accepts_a_field_with_an_unconditional_unique_index(uow: AppUnitOfWork) -> None:
    with uow:
        found = Repository(uow.session, Coupon).in_bulk(["S2", "S9"], field_name="serial")
        assert [(serial, c.retired) for serial, c in found.items()] == [("S2", True)]
