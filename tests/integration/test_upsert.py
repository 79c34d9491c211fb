"""bulk_create(update_conflicts=True, unique_fields=[...], update_fields=[...]): Django's upsert,
through INSERT ... ON CONFLICT DO UPDATE, on SQLite and PostgreSQL (the `db` fixture is
parametrized by backend). Races are in test_upsert_races.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Index, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import FieldError, Repository
from tests.integration.helpers import seed, stored
from tests.models import AppUnitOfWork, Membership, User
from tests.server_log import (
    server_statements,
)
from uow import Database, UnitOfWork
from uow.testing import count_statements

pytestmark = [pytest.mark.both_faces, pytest.mark.through_pgbouncer]

BY_EMAIL: dict[str, Any] = {"unique_fields": ["email"], "update_fields": ["name"]}


class UserIn(BaseModel):
    email: str
    name: str
    age: int | None = None


def test_upsert_inserts_new_rows_and_updates_conflicting_ones_returning_all_in_input_order(
    db: Database, uow: AppUnitOfWork
) -> None:
    ada, bob = seed(uow, ("ada@example.com", "Ada", 36), ("bob@example.com", "Bob", 40))
    rows = [
        {"email": "carol@example.com", "name": "Carol"},
        {"email": "bob@example.com", "name": "Robert", "age": 1},  # age is not updated
        {"email": "dave@example.com", "name": "Dave", "age": 7},
        {"email": "ada@example.com", "name": "Ada L."},
    ]
    with uow:
        upserted = uow.users.bulk_create(rows, update_conflicts=True, **BY_EMAIL)
        assert [u.email for u in upserted] == [row["email"] for row in rows]
        assert [u.name for u in upserted] == ["Carol", "Robert", "Dave", "Ada L."]
        assert [u.age for u in upserted] == [None, 40, 7, 36]
        assert (upserted[1].id, upserted[3].id) == (bob.id, ada.id)
        assert len({u.id for u in upserted}) == 4
        assert uow.users.get(upserted[0].id) is upserted[0]  # the session's objects
    assert stored(db) == {
        "ada@example.com": ("Ada L.", 36),
        "bob@example.com": ("Robert", 40),
        "carol@example.com": ("Carol", None),
        "dave@example.com": ("Dave", 7),
    }


def test_objects_the_session_holds_are_refreshed_with_the_new_values(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        ada = uow.users.one(email="ada@example.com")
        (upserted,) = uow.users.bulk_create(
            [{"email": "ada@example.com", "name": "Ada L.", "age": 37}],
            update_conflicts=True,
            unique_fields=["email"],
            update_fields=["name", "age"],
        )
        assert upserted is ada
        assert (ada.name, ada.age) == ("Ada L.", 37)  # not stale
    assert stored(db) == {"ada@example.com": ("Ada L.", 37)}


def test_a_field_a_row_leaves_out_is_updated_to_what_an_insert_would_store(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        uow.users.bulk_create(
            [{"email": "ada@example.com", "name": "Ada"}],
            update_conflicts=True,
            unique_fields=["email"],
            update_fields=["age"],
        )
    assert stored(db) == {"ada@example.com": ("Ada", None)}  # Django's EXCLUDED semantics


def test_upsert_without_returning_objects(db: Database, uow: AppUnitOfWork) -> None:
    seed(uow, ("ada@example.com", "Ada", 36))
    rows = [{"email": f"u{n}@example.com", "name": f"U{n}"} for n in range(50)]
    rows.append({"email": "ada@example.com", "name": "Ada L."})
    with uow:
        assert (
            uow.users.bulk_create(rows, update_conflicts=True, return_objects=False, **BY_EMAIL)
            == []
        )
    users = stored(db)
    assert len(users) == 51
    assert users["ada@example.com"] == ("Ada L.", 36)


def test_items_may_be_instances_and_pydantic_models_and_batches_keep_the_order(
    db: Database, uow: AppUnitOfWork
) -> None:
    seeded = seed(uow, *[(f"u{n:03d}@example.com", "Old", n) for n in range(0, 100, 2)])
    items: list[Any] = [
        User(email=f"u{n:03d}@example.com", name="New", age=n)
        if n % 3
        else UserIn(email=f"u{n:03d}@example.com", name="New", age=n)
        for n in reversed(range(100))
    ]
    with uow:
        upserted = uow.users.bulk_create(
            items,
            batch_size=7,
            update_conflicts=True,
            unique_fields=["email"],
            update_fields=["name", "age"],
        )
        assert [u.email for u in upserted] == [item.email for item in items]
        assert {u.id for u in upserted} > {u.id for u in seeded}
    assert stored(db) == {f"u{n:03d}@example.com": ("New", n) for n in range(100)}


def test_a_composite_unique_key(db: Database, uow: AppUnitOfWork) -> None:
    (ada,) = seed(uow, ("ada@example.com", "Ada", None))
    with uow:
        uow.memberships.create(user_id=ada.id, group="admins", role="member")
    rows = [
        {"user_id": ada.id, "group": "staff", "role": "member"},
        {"user_id": ada.id, "group": "admins", "role": "owner"},
    ]
    with uow:
        upserted = uow.memberships.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["user_id", "group"],
            update_fields=["role"],
        )
        assert [(m.group, m.role) for m in upserted] == [("staff", "member"), ("admins", "owner")]
    with db.Session() as session:
        roles = dict(session.execute(select(Membership.group, Membership.role)).all())
    assert roles == {"staff": "member", "admins": "owner"}


def test_rows_without_the_unique_values_are_inserted_and_keep_their_place(
    db: Database, uow: AppUnitOfWork
) -> None:
    (ada,) = seed(uow, ("ada@example.com", "Ada", None))
    rows: list[dict[str, Any]] = [
        {"email": "new1@example.com", "name": "New 1"},  # no id: a new row
        {"id": ada.id, "email": "ada@example.com", "name": "Ada L."},
        {"email": "new2@example.com", "name": "New 2"},
    ]
    with uow:
        upserted = uow.users.bulk_create(
            rows, update_conflicts=True, unique_fields=["id"], update_fields=["name"]
        )
        assert [u.email for u in upserted] == [
            "new1@example.com",
            "ada@example.com",
            "new2@example.com",
        ]
        assert upserted[1].id == ada.id
    assert stored(db)["ada@example.com"] == ("Ada L.", None)


# -- mistakes are refused before any SQL --------------------------------------------------------


class OtherBase(DeclarativeBase):
    pass


class Account(OtherBase):
    """Unique only in part: `handle` under a condition, `code` through an expression."""

    __tablename__ = "upsert_accounts"
    __table_args__ = (
        Index("accounts_live_handle", "handle", unique=True, postgresql_where="live"),
        Index("accounts_code_lower", func.lower("code"), unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    handle: Mapped[str] = mapped_column(String(50))
    code: Mapped[str] = mapped_column(String(50))
    live: Mapped[bool]


class AccountUnitOfWork(UnitOfWork):
    accounts: Repository[Account]


MISTAKES: dict[str, tuple[type[Exception], dict[str, Any], str]] = {
    "unknown unique field": (
        FieldError,
        {"update_conflicts": True, "unique_fields": ["mail"], "update_fields": ["name"]},
        "User has no column 'mail' (in unique_fields); valid columns: age, email, id, name",
    ),
    "unknown update field": (
        FieldError,
        {"update_conflicts": True, "unique_fields": ["email"], "update_fields": ["nom"]},
        "User has no column 'nom' (in update_fields)",
    ),
    "unique fields that are not unique": (
        FieldError,
        {"update_conflicts": True, "unique_fields": ["name"], "update_fields": ["age"]},
        "(name) is not. Unique fields: (email), (id)",
    ),
    "unique fields that are more than a unique set": (
        FieldError,
        {"update_conflicts": True, "unique_fields": ["email", "name"], "update_fields": ["age"]},
        "(email, name) is not",
    ),
    "no unique fields": (
        FieldError,
        {"update_conflicts": True, "update_fields": ["name"]},
        "needs unique_fields (for example unique_fields=['email'])",
    ),
    "no update fields": (
        FieldError,
        {"update_conflicts": True, "unique_fields": ["email"], "update_fields": []},
        "needs update_fields",
    ),
    "updating a unique field": (
        FieldError,
        {"update_conflicts": True, "unique_fields": ["email"], "update_fields": ["name", "email"]},
        "update_fields names 'email', which is in unique_fields",
    ),
    "updating the primary key": (
        FieldError,
        {"update_conflicts": True, "unique_fields": ["email"], "update_fields": ["id"]},
        "update_fields names 'id', the primary key of User",
    ),
    "both kinds of conflict handling": (
        ValueError,
        {"ignore_conflicts": True, "update_conflicts": True, **BY_EMAIL},
        "ignore_conflicts and update_conflicts are mutually exclusive",
    ),
    "unique fields without update_conflicts": (
        ValueError,
        {"unique_fields": ["email"]},
        "unique_fields and update_fields only apply to update_conflicts=True",
    ),
    "update fields without update_conflicts": (
        ValueError,
        {"update_fields": ["name"]},
        "unique_fields and update_fields only apply to update_conflicts=True",
    ),
    "a string for a list": (
        TypeError,
        {"update_conflicts": True, "unique_fields": "email", "update_fields": ["name"]},
        "unique_fields takes a list of field names, not a string: unique_fields=['email']",
    ),
}


@pytest.mark.parametrize(
    ("error", "options", "message"), list(MISTAKES.values()), ids=list(MISTAKES)
)
def test_a_mistaken_option_is_refused_before_any_sql(
    db: Database,
    uow: AppUnitOfWork,
    error: type[Exception],
    options: dict[str, Any],
    message: str,
) -> None:
    with uow, count_statements(db.engine) as log:
        with pytest.raises(error) as caught:
            uow.users.bulk_create([{"email": "ada@example.com", "name": "Ada"}], **options)
        # Django raises ValueError for these; FieldError is one, and says which field.
        assert (type(caught.value) is FieldError) == (error is FieldError)
        assert message in str(caught.value)
    assert log.statements == []


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (
            "handle",
            "(handle) is unique only under a condition (partial index 'accounts_live_handle')",
        ),
        ("code", "(code) is not. Unique fields: (id)"),  # an expression index: ON CONFLICT cannot
    ],
)
@pytest.mark.sync_only(reason="builds a sync UnitOfWork subclass over db")
def test_a_partial_or_expression_unique_index_is_no_conflict_target(
    db: Database, field: str, message: str
) -> None:
    uow = AccountUnitOfWork(db)
    with uow, count_statements(db.engine) as log:
        with pytest.raises(FieldError) as caught:
            uow.accounts.bulk_create(
                [{"handle": "h", "code": "c", "live": True}],
                update_conflicts=True,
                unique_fields=[field],
                update_fields=["live"],
            )
        assert message in str(caught.value)
    assert log.statements == []


def test_two_items_with_the_same_unique_values_are_refused_before_any_sql(
    db: Database, uow: AppUnitOfWork
) -> None:
    rows = [
        {"email": "ada@example.com", "name": "Ada"},
        {"email": "bob@example.com", "name": "Bob"},
        {"email": "ada@example.com", "name": "Ada again"},
    ]
    with uow, count_statements(db.engine) as log:
        with pytest.raises(
            ValueError,
            match=re.escape("items 0 and 2 with the same email='ada@example.com': a row can"),
        ):
            uow.users.bulk_create(rows, update_conflicts=True, **BY_EMAIL)
    assert log.statements == []


# -- all or nothing -----------------------------------------------------------------------------


@pytest.mark.parametrize("return_objects", [True, False], ids=["objects", "no objects"])
def test_a_failing_batch_takes_back_every_insert_and_update_and_the_block_goes_on(
    db: Database, uow: AppUnitOfWork, return_objects: bool
) -> None:
    rows: list[dict[str, Any]] = [
        {"email": f"bulk{n:04d}@example.com", "name": "Bulk"} for n in range(1000)
    ]
    rows.insert(0, {"email": "before@example.com", "name": "Updated"})
    rows[900] = {"email": "null@example.com", "name": None}  # NOT NULL: not a conflict
    with uow:
        before = uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(IntegrityError):
            uow.users.bulk_create(
                rows,
                batch_size=100,
                update_conflicts=True,
                return_objects=return_objects,
                **BY_EMAIL,
            )
        # The first batch updated `before` (and refreshed it): it is expired, not evicted.
        assert list(uow.session.identity_map.values()) == [before]
        assert before.name == "Before"
        assert uow.users.count() == 1
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == {
        "before@example.com": ("Before", None),
        "after@example.com": ("After", None),
    }


# -- on the wire --------------------------------------------------------------------------------


def test_as_the_first_write_an_upsert_is_one_statement_between_begin_and_commit(
    wired: tuple[Database, str],
) -> None:
    db, name = wired
    uow = AppUnitOfWork(db)
    rows = [{"email": "ada@example.com", "name": "Ada L."}, {"email": "b@example.com", "name": "B"}]
    with server_statements(name) as sent, uow:
        uow.users.bulk_create(rows, update_conflicts=True, **BY_EMAIL)
    assert [s.split()[0] for s in sent] == ["BEGIN", "INSERT", "COMMIT"]
    assert "ON CONFLICT (email) DO UPDATE SET name = excluded.name RETURNING" in sent[1]
