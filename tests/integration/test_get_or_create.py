"""first_or_create, create_or_first and get_or_create on real databases.

Every test runs on SQLite and on PostgreSQL (the `db` fixture is parametrized by backend). The
race across processes is in test_races.py; here a concurrent insert is forced deterministically.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import event, insert, select
from sqlalchemy.exc import IntegrityError

from repositories._integrity import is_unique_violation
from tests.integration.helpers import BEFORE_AND_AFTER, seed, stored
from tests.models import AppUnitOfWork, Post, User
from uow import Database
from uow.testing import count_statements

pytestmark = [pytest.mark.both_faces, pytest.mark.through_pgbouncer]


class UserPatch(BaseModel):
    name: str | None = None
    age: int | None = None


def test_first_or_create_hit_is_exactly_one_select(db: Database, uow: AppUnitOfWork) -> None:
    [ada] = seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        uow.users.count()  # the block's session and connection exist before counting
        with count_statements(db.engine) as log:
            found = uow.users.first_or_create(email="ada@example.com", defaults={"name": "X"})
    assert found.id == ada.id
    assert log.count == 1
    assert log.statements[0].lstrip().upper().startswith("SELECT")


def test_first_or_create_miss_creates_from_attrs_and_defaults(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        ada = uow.users.first_or_create(email="ada@example.com", defaults={"name": "Ada", "age": 3})
        bob = uow.users.first_or_create(
            UserPatch(name="Bob"), email="bob@example.com", age=5
        )  # pydantic defaults, attrs win over them
        assert isinstance(ada.id, int)
        assert isinstance(bob.id, int)
    assert stored(db) == {"ada@example.com": ("Ada", 3), "bob@example.com": ("Bob", 5)}


def test_first_or_create_applies_defaults_only_when_creating(
    db: Database, uow: AppUnitOfWork
) -> None:
    [ada] = seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        found = uow.users.first_or_create(
            email="ada@example.com", defaults={"name": "Changed", "age": 1}
        )
        assert found.id == ada.id
        assert (found.name, found.age) == ("Ada", 36)
    assert stored(db) == {"ada@example.com": ("Ada", 36)}


def test_create_or_first_returns_the_existing_row_without_rolling_back_other_work(
    db: Database, uow: AppUnitOfWork
) -> None:
    [ada] = seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with count_statements(db.engine) as log:
            found = uow.users.create_or_first(email="ada@example.com", defaults={"name": "Other"})
        assert found.id == ada.id
        assert found.name == "Ada"
        uow.users.create(email="after@example.com", name="After")
    # INSERT ... ON CONFLICT DO NOTHING: the conflict is no error, so nothing is rolled back;
    # the savepoint only shields the earlier work from other errors (NOT NULL, foreign key).
    assert "ON CONFLICT DO NOTHING" in log.matching("INSERT")[0]
    assert log.matching("SAVEPOINT")
    assert not log.matching("ROLLBACK")
    assert stored(db) == {"ada@example.com": ("Ada", 36), **BEFORE_AND_AFTER}


def test_create_or_first_creates_when_there_is_no_conflict(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow, count_statements(db.engine) as log:
        ada = uow.users.create_or_first(email="ada@example.com", defaults={"name": "Ada"})
        assert isinstance(ada.id, int)
    assert not log.matching("ROLLBACK")
    assert stored(db) == {"ada@example.com": ("Ada", None)}


def test_first_or_create_reraises_a_unique_conflict_when_no_row_matches_its_attrs(
    db: Database, uow: AppUnitOfWork
) -> None:
    # The SELECT (email AND name) misses, the INSERT hits the unique email, and the re-SELECT
    # still finds nothing: the original IntegrityError propagates, the outer work survives.
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(IntegrityError):
            uow.users.first_or_create(email="ada@example.com", name="Not Ada")
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == {"ada@example.com": ("Ada", 36), **BEFORE_AND_AFTER}


def test_first_or_create_returns_the_row_a_concurrent_transaction_inserted_first(
    db: Database, uow: AppUnitOfWork, backend: str
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite serialises writers: no one can insert while the block holds the lock")
    fired: list[str] = []

    def insert_the_winner_first(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if statement.startswith("INSERT INTO users") and not fired:
            fired.append(statement)
            with db.engine.begin() as other:  # another connection, committed at once
                other.execute(insert(User).values(email="race@example.com", name="Winner"))

    with uow:
        uow.users.create(email="before@example.com", name="Before")
        event.listen(db.engine, "before_cursor_execute", insert_the_winner_first)
        try:
            with count_statements(db.engine) as log:
                user = uow.users.first_or_create(email="race@example.com", defaults={"name": "L"})
        finally:
            event.remove(db.engine, "before_cursor_execute", insert_the_winner_first)
        assert user.name == "Winner"
    assert fired
    assert not log.matching("ROLLBACK")  # ON CONFLICT DO NOTHING: the conflict aborted nothing
    assert stored(db) == {
        "before@example.com": ("Before", None),
        "race@example.com": ("Winner", None),
    }


def test_first_or_create_missing_not_null_value_raises_integrity_error_transaction_usable(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(IntegrityError):
            uow.users.first_or_create(email="nameless@example.com")  # name is NOT NULL
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == BEFORE_AND_AFTER


def test_first_or_create_foreign_key_violation_raises_integrity_error_transaction_usable(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        author = uow.users.create(email="before@example.com", name="Before")
        uow.posts.create(title="Kept", author_id=author.id)
        with pytest.raises(IntegrityError):
            uow.posts.first_or_create(title="Orphan", author_id=author.id + 1000)
        with pytest.raises(IntegrityError):
            uow.posts.create_or_first(title="Orphan", author_id=author.id + 1000)
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == BEFORE_AND_AFTER
    with db.Session() as session:
        assert session.scalars(select(Post.title)).all() == ["Kept"]


def test_get_or_create_reports_created_on_a_miss_then_found_on_a_hit(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        ada, created = uow.users.get_or_create(email="ada@example.com", defaults={"name": "Ada"})
        assert created is True
        assert isinstance(ada.id, int)
        again, created_again = uow.users.get_or_create(
            email="ada@example.com", defaults={"name": "Changed"}
        )
        assert created_again is False
        assert again is ada
    with uow:
        third, created_third = uow.users.get_or_create(email="ada@example.com")
        assert (third.id, created_third) == (ada.id, False)
    assert stored(db) == {"ada@example.com": ("Ada", None)}


def test_get_or_create_creates_from_the_plain_keys_and_defaults_only(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, ("ADA@example.com", "Other", 1))
    with uow:
        ada, created = uow.users.get_or_create(
            email__exact="ada@example.com", name="Ada", defaults={"email": "ada@example.com"}
        )
        assert created is True
        _, found = uow.users.get_or_create(email__iexact="ADA@EXAMPLE.COM", name="Ada")
        assert found is False
    assert (ada.email, ada.name, ada.age) == ("ada@example.com", "Ada", None)
    assert stored(db) == {"ADA@example.com": ("Other", 1), "ada@example.com": ("Ada", None)}


@pytest.mark.parametrize("earlier_write", [True, False], ids=["after a write", "first write"])
def test_a_not_null_error_leaves_the_block_usable_whether_or_not_it_wrote_before(
    db: Database, uow: AppUnitOfWork, earlier_write: bool
) -> None:
    with uow:
        uow.users.count()
        if earlier_write:
            uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(IntegrityError):
            uow.users.first_or_create(email="nameless@example.com")  # name is NOT NULL
        uow.users.create(email="after@example.com", name="After")
    expected = {**BEFORE_AND_AFTER} if earlier_write else {"after@example.com": ("After", None)}
    assert stored(db) == expected


def test_a_conflict_on_another_unique_field_raises_integrity_error_and_the_block_goes_on(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        # No user is named "Grace", but the row to create takes Ada's e-mail.
        with pytest.raises(IntegrityError) as caught:
            uow.users.get_or_create(name="Grace", defaults={"email": "ada@example.com"})
        assert is_unique_violation(caught.value)
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == {"ada@example.com": ("Ada", 36), **BEFORE_AND_AFTER}
