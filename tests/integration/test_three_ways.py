"""One behavioural suite, three ways: in memory, on SQLite and on PostgreSQL, same results.

Every test runs on `InMemoryDatabase()` and on the two real databases with the same
assertions, through the suite's own `AppUnitOfWork` and `UserRepository` (whose `adults()` is a
custom method on the base API): what passes in memory passes on a database, and the other way
round. The in-memory-only tests at the end cover what a database has no counterpart for (the
error for SQL) and the async face.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ForeignKey, String, UniqueConstraint, select
from sqlalchemy.exc import IntegrityError, PendingRollbackError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import AsyncRepository, Repository
from repositories.errors import DoesNotExist, FieldError, MultipleObjectsReturned
from tests.conftest import fresh_database
from tests.models import AppUnitOfWork, Membership, Post, User
from uow import AsyncUnitOfWork, Database, UnitOfWork
from uow.errors import UnitOfWorkError
from uow.testing import AsyncInMemoryDatabase, InMemoryDatabase, InMemorySQLError

WAYS = ["memory", "sqlite", "postgresql"]


@pytest.fixture(params=WAYS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database, one way per parameter."""
    if request.param == "memory":
        yield InMemoryDatabase()
        return
    with fresh_database(request.param, tmp_path) as database:
        yield database


@pytest.fixture
def uow(db: Database) -> AppUnitOfWork:
    return AppUnitOfWork(db)


@pytest.fixture
def seeded(uow: AppUnitOfWork) -> AppUnitOfWork:
    """Four users and three posts (the ids are 1..4 and 1..3 on every way)."""
    with uow:
        ada = uow.users.create(email="ada@example.com", name="Ada", age=36)
        uow.users.create(email="bob@example.org", name="Bob", age=17)
        uow.users.create(email="cy@example.com", name="Cy Young")
        dee = uow.users.create(email="Dee@Example.com", name="Dee", age=52)
        uow.posts.create(title="Hello world", author=ada)
        uow.posts.create(title="Second", author_id=ada.id)
        uow.posts.create(title="Notes 50%", author=dee)
    return uow


def emails(users: list[User]) -> list[str]:
    return [user.email for user in users]


def everyone(uow: AppUnitOfWork) -> dict[str, tuple[str, int | None]]:
    with uow:
        return {user.email: (user.name, user.age) for user in uow.users.all()}


# -- lookups -----------------------------------------------------------------------------------

LOOKUPS: list[tuple[dict[str, Any], list[str]]] = [
    ({"email": "ada@example.com"}, ["ada@example.com"]),
    ({"email__exact": "dee@example.com"}, []),
    ({"email__iexact": "dee@example.com"}, ["Dee@Example.com"]),
    ({"email__contains": "example"}, ["ada@example.com", "bob@example.org", "cy@example.com"]),
    (
        {"email__icontains": "EXAMPLE"},
        ["ada@example.com", "bob@example.org", "cy@example.com", "Dee@Example.com"],
    ),
    ({"name__startswith": "C"}, ["cy@example.com"]),
    ({"name__startswith": "c"}, []),
    ({"name__istartswith": "c"}, ["cy@example.com"]),
    ({"email__endswith": ".org"}, ["bob@example.org"]),
    ({"email__endswith": ".COM"}, []),
    ({"email__iendswith": ".COM"}, ["ada@example.com", "cy@example.com", "Dee@Example.com"]),
    ({"age__in": [17, 52, 99]}, ["bob@example.org", "Dee@Example.com"]),
    ({"age__in": []}, []),
    ({"age__gt": 36}, ["Dee@Example.com"]),
    ({"age__gte": 36}, ["ada@example.com", "Dee@Example.com"]),
    ({"age__lt": 36}, ["bob@example.org"]),
    ({"age__lte": 36}, ["ada@example.com", "bob@example.org"]),
    ({"age__range": (17, 36)}, ["ada@example.com", "bob@example.org"]),
    ({"age__isnull": True}, ["cy@example.com"]),
    ({"age": None}, ["cy@example.com"]),
    ({"age__isnull": False, "name__contains": "e"}, ["Dee@Example.com"]),
    ({"age__gt": 2**40}, []),
    ({"age__lt": 2**40}, ["ada@example.com", "bob@example.org", "Dee@Example.com"]),
    ({"posts__title__startswith": "Notes"}, ["Dee@Example.com"]),
    ({"posts__title__contains": "50%"}, ["Dee@Example.com"]),
    ({"posts__title__contains": "5_%"}, []),
    ({"posts__isnull": True}, ["bob@example.org", "cy@example.com"]),
    ({"posts__isnull": False}, ["ada@example.com", "Dee@Example.com"]),
]


@pytest.mark.parametrize(("lookups", "expected"), LOOKUPS, ids=lambda x: repr(x)[:40])
def test_lookups_match_the_same_rows(
    seeded: AppUnitOfWork, lookups: dict[str, Any], expected: list[str]
) -> None:
    with seeded:
        found = seeded.users.filter(**lookups).order_by("id").all()
        assert emails(found) == expected
        assert seeded.users.count(**lookups) == len(expected)
        assert seeded.users.exists(**lookups) is bool(expected)


def test_in_reads_a_generator_once(seeded: AppUnitOfWork) -> None:
    with seeded:
        assert emails(seeded.users.all(age__in=(age for age in [36, 17]))) == [
            "ada@example.com",
            "bob@example.org",
        ]


def test_lookups_through_a_many_to_one(seeded: AppUnitOfWork) -> None:
    with seeded:
        titles = [p.title for p in seeded.posts.filter(author__email__iexact="ADA@example.com")]
        assert sorted(titles) == ["Hello world", "Second"]
        ada = seeded.users.one(email="ada@example.com")
        assert seeded.posts.count(author=ada) == 2
        assert seeded.posts.filter(author__age__gte=50).one().title == "Notes 50%"
        assert seeded.posts.count(author__posts__title="Second") == 2


def test_related_objects_are_there_after_a_read(seeded: AppUnitOfWork) -> None:
    with seeded:
        post = seeded.posts.one(title="Notes 50%")
        assert post.author.name == "Dee"
        ada = seeded.users.one(email="ada@example.com")
        assert sorted(p.title for p in ada.posts) == ["Hello world", "Second"]


def test_exclude_keeps_the_rows_the_lookups_do_not_all_match(seeded: AppUnitOfWork) -> None:
    with seeded:
        kept = seeded.users.exclude(age__gte=18).order_by("email").all()
        assert emails(kept) == ["bob@example.org", "cy@example.com"]  # NULL age is kept
        both = seeded.users.exclude(age__gte=18, email__endswith=".com").order_by("id").all()
        assert emails(both) == ["bob@example.org", "cy@example.com"]
        assert seeded.users.exclude(age__in=[]).count() == 4
        chained = seeded.users.filter(email__icontains="example").exclude(name="Bob")
        assert sorted(emails(chained.all())) == [
            "Dee@Example.com",
            "ada@example.com",
            "cy@example.com",
        ]


@pytest.mark.parametrize(
    ("lookups", "error"),
    [
        ({"nope": 1}, "User has no field 'nope'"),
        ({"age__nope": 1}, "'nope' in 'age__nope' is not a lookup operator"),
        ({"posts__nope": 1}, "Post has no field 'nope'"),
        ({"age": "old"}, "User.age holds int values"),
        ({"age__in": 3}, "'in' takes an iterable"),
        ({"age__gt": None}, "'gt' cannot compare with None"),
        ({"email__contains": 3}, "'contains' takes a string"),
        ({"age__isnull": "yes"}, "'isnull' takes True or False"),
    ],
)
def test_a_bad_lookup_is_the_same_field_error(
    seeded: AppUnitOfWork, lookups: dict[str, Any], error: str
) -> None:
    with seeded:
        with pytest.raises(FieldError, match=error):
            seeded.users.filter(**lookups)
        with pytest.raises(FieldError, match=error):
            seeded.users.exclude(**lookups)


def test_unknown_fields_are_refused_before_anything_changes(seeded: AppUnitOfWork) -> None:
    before = everyone(seeded)
    with seeded:
        with pytest.raises(FieldError):
            seeded.users.create(email="new@example.com", name="New", nope=1)
        with pytest.raises(FieldError):
            seeded.users.query().order_by("nope")
        with pytest.raises(FieldError):
            seeded.users.first_or_create(email="new@example.com", defaults={"nope": 1})
        with pytest.raises(FieldError):
            seeded.users.bulk_create([{"email": "new@example.com", "nope": 1}])
        with pytest.raises(FieldError):
            seeded.users.filter(age=17).update(nope=1)
        with pytest.raises(FieldError):
            seeded.users.in_bulk(["Ada"], field_name="name")  # not unique
    assert everyone(seeded) == before


# -- reading -----------------------------------------------------------------------------------


def test_order_by_slicing_and_indexing(seeded: AppUnitOfWork) -> None:
    with seeded:
        aged = seeded.users.filter(age__isnull=False)
        assert [u.age for u in aged.order_by("-age").all()] == [52, 36, 17]
        assert [u.age for u in aged.order_by("age").all()] == [17, 36, 52]
        by_name = seeded.users.query().order_by("name")
        assert [u.name for u in by_name[1:3]] == ["Bob", "Cy Young"]
        assert [u.name for u in by_name[2:]] == ["Cy Young", "Dee"]
        assert [u.name for u in by_name[1:3][1:]] == ["Cy Young"]
        assert by_name[3].name == "Dee"
        with pytest.raises(IndexError):
            by_name[4]
        assert by_name[1:3].count() == 2
        assert seeded.posts.query().order_by("author_id", "-title").all()[0].title == "Second"
        assert emails(seeded.users.adults()) == ["Dee@Example.com", "ada@example.com"]


def test_first_one_all_count_exists(seeded: AppUnitOfWork) -> None:
    with seeded:
        first = seeded.users.first()
        assert first is not None
        assert first.email == "ada@example.com"  # by primary key
        assert seeded.users.first(age__gt=100) is None
        assert seeded.users.query().order_by("-id").first().email == "Dee@Example.com"  # type: ignore[union-attr]
        assert seeded.users.one(name="Bob").age == 17
        with pytest.raises(DoesNotExist):
            seeded.users.one(name="Nobody")
        with pytest.raises(MultipleObjectsReturned):
            seeded.users.one(email__contains="example")
        assert len(seeded.users.all()) == 4
        assert seeded.users.count() == 4
        assert seeded.users.exists(name="Cy Young")
        assert not seeded.users.exists(name="Nobody")


def test_get_by_primary_key(seeded: AppUnitOfWork) -> None:
    with seeded:
        ada = seeded.users.first(email="ada@example.com")
        assert ada is not None
        assert seeded.users.get(ada.id) is ada
        assert seeded.users.get(999) is None
        assert seeded.users.get(2**40) is None
        with pytest.raises(FieldError):
            seeded.users.get("one")
        seeded.memberships.create(user_id=ada.id, group="admins")
        membership = seeded.memberships.get((ada.id, "admins"))
        assert membership is not None
        assert membership.role == "member"  # the column's default
        assert seeded.memberships.get({"user_id": ada.id, "group": "admins"}) is membership
        assert seeded.memberships.get((ada.id, "nobody")) is None


def test_paginate(seeded: AppUnitOfWork) -> None:
    with seeded:
        page = seeded.users.paginate(2, 3)
        assert (page.page, page.per_page, page.total, page.pages) == (2, 3, 4, 2)
        assert (page.has_next, page.has_prev) == (False, True)
        assert emails(page.items) == ["Dee@Example.com"]
        first = seeded.users.query().order_by("-age").paginate(1, 2, count=False)
        assert first.total is None
        assert first.has_next
        assert seeded.users.paginate(1, 10, age__lt=20).total == 1
        with pytest.raises(ValueError, match="page"):
            seeded.users.paginate(0)


def test_iterator_and_in_bulk(seeded: AppUnitOfWork) -> None:
    with seeded:
        streamed = seeded.users.query().order_by("email").iterator(chunk_size=2)
        assert emails(list(streamed)) == [
            "Dee@Example.com",
            "ada@example.com",
            "bob@example.org",
            "cy@example.com",
        ]
        assert emails(list(seeded.users.iterator(age__gte=50))) == ["Dee@Example.com"]
        with pytest.raises(ValueError, match="chunk_size"):
            seeded.users.iterator(chunk_size=0)
        by_id = seeded.users.in_bulk([1, 2, 999, 2])
        assert {key: user.name for key, user in by_id.items()} == {1: "Ada", 2: "Bob"}
        by_email = seeded.users.in_bulk(["cy@example.com", "x@example.com"], field_name="email")
        assert list(by_email) == ["cy@example.com"]


# -- writing -----------------------------------------------------------------------------------


def test_create_update_delete(seeded: AppUnitOfWork) -> None:
    with seeded:
        eve = seeded.users.create({"email": "eve@example.com", "name": "E"}, age=30)
        assert eve.id == 5
        assert eve.age == 30
        seeded.users.update(eve, {"name": "Eve"}, age=31)
        bob = seeded.users.one(name="Bob")
        seeded.users.delete(bob)
        with pytest.raises(TypeError):
            seeded.users.update(seeded.posts.first(), name="x")  # type: ignore[arg-type]
    assert everyone(seeded)["eve@example.com"] == ("Eve", 31)
    assert "bob@example.org" not in everyone(seeded)


def test_query_update_and_delete(seeded: AppUnitOfWork) -> None:
    with seeded:
        assert seeded.users.filter(age__lt=40).update(age=40) == 2
        assert seeded.users.filter(age__in=[]).update(age=1) == 0
        assert seeded.posts.filter(title__startswith="S").delete() == 1
        assert seeded.posts.count() == 2
        assert seeded.users.filter(age=40).count() == 2
        with pytest.raises(TypeError, match="sliced"):
            seeded.users.query()[:1].update(age=1)
    assert everyone(seeded)["bob@example.org"] == ("Bob", 40)


def test_bulk_create(uow: AppUnitOfWork) -> None:
    with uow:
        users = uow.users.bulk_create(
            [{"email": "a@example.com", "name": "A"}, User(email="b@example.com", name="B")]
        )
        assert [(u.id, u.email) for u in users] == [(1, "a@example.com"), (2, "b@example.com")]
        posts = uow.posts.bulk_create([Post(title="T", author=users[1])])
        assert posts[0].author_id == 2
        skipped = uow.users.bulk_create(
            [{"email": "a@example.com", "name": "dup"}, {"email": "c@example.com", "name": "C"}],
            ignore_conflicts=True,
        )
        assert [u.email for u in skipped] == ["c@example.com"]
        upserted = uow.users.bulk_create(
            [{"email": "a@example.com", "name": "A2"}, {"email": "d@example.com", "name": "D"}],
            update_conflicts=True,
            unique_fields=["email"],
            update_fields=["name"],
        )
        assert [(u.email, u.name) for u in upserted] == [
            ("a@example.com", "A2"),
            ("d@example.com", "D"),
        ]
        assert uow.users.bulk_create([]) == []
        with pytest.raises(ValueError, match="mutually exclusive"):
            uow.users.bulk_create([{"email": "e@x"}], ignore_conflicts=True, update_conflicts=True)
        with pytest.raises(IntegrityError):  # all or nothing: the new row goes too
            with uow:
                uow.users.bulk_create(
                    [
                        {"email": "new@example.com", "name": "N"},
                        {"email": "b@example.com", "name": "B"},
                    ]
                )
        assert uow.users.count() == 4
    assert sorted(everyone(uow)) == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ]


# -- get-or-create -----------------------------------------------------------------------------


def test_first_or_create_and_create_or_first(seeded: AppUnitOfWork) -> None:
    calls: list[str] = []

    def name() -> str:
        calls.append("called")
        return "Called"

    with seeded:
        found = seeded.users.first_or_create(email="ada@example.com", defaults={"name": name})
        assert found.name == "Ada"
        assert calls == []  # not called on a hit
        made = seeded.users.first_or_create(
            email="new@example.com", defaults={"name": name, "email": "ignored@example.com"}
        )
        assert (made.email, made.name, calls) == ("new@example.com", "Called", ["called"])
        again = seeded.users.create_or_first(email="ada@example.com", defaults={"name": "Other"})
        assert (again.email, again.name) == ("ada@example.com", "Ada")
        fresh = seeded.users.create_or_first(email="fresh@example.com", defaults={"name": "F"})
        assert fresh.name == "F"
        with pytest.raises(IntegrityError):  # NOT NULL: not a conflict, it propagates
            seeded.users.create_or_first(email="noname@example.com")
        assert seeded.users.count() == 6


def test_get_or_create_and_update_or_create(seeded: AppUnitOfWork) -> None:
    with seeded:
        user, created = seeded.users.get_or_create(
            email="g@example.com", name="Lookup", defaults={"name": "Default", "age": 3}
        )
        assert (created, user.name, user.age) == (True, "Default", 3)  # defaults win
        same, created = seeded.users.get_or_create(email="g@example.com", defaults={"age": 9})
        assert (same is user, created, same.age) == (True, False, 3)
        old, created = seeded.users.get_or_create(age__gte=50, defaults={"name": "X"})
        assert (old.email, created) == ("Dee@Example.com", False)
        with pytest.raises(MultipleObjectsReturned):
            seeded.users.get_or_create(age__gte=18)
        updated, created = seeded.users.update_or_create(
            email="ada@example.com", defaults={"age": 37}
        )
        assert (updated.age, created) == (37, False)
        new, created = seeded.users.update_or_create(
            email="u@example.com", defaults={"age": 1}, create_defaults={"name": "U", "age": 2}
        )
        assert (new.name, new.age, created) == ("U", 2, True)
        with pytest.raises(MultipleObjectsReturned):
            seeded.users.update_or_create(age__isnull=False, defaults={"age": 1})
        with pytest.raises(FieldError):
            seeded.users.update_or_create(email="x@example.com", defaults={"nope": 1})
    assert everyone(seeded)["ada@example.com"] == ("Ada", 37)
    assert everyone(seeded)["u@example.com"] == ("U", 2)


# -- constraints -------------------------------------------------------------------------------


def test_constraint_violations_raise_integrity_error(seeded: AppUnitOfWork) -> None:
    before = everyone(seeded)
    with seeded:
        with pytest.raises(IntegrityError), seeded:  # unique column
            seeded.users.create(email="ada@example.com", name="Again")
        with pytest.raises(IntegrityError), seeded:  # NOT NULL
            seeded.users.create(email="nameless@example.com")
        with pytest.raises(IntegrityError), seeded:  # foreign key
            seeded.posts.create(title="Orphan", author_id=999)
        with pytest.raises(IntegrityError), seeded:  # the row is referred to
            seeded.users.delete(seeded.users.one(email="ada@example.com"))
        with pytest.raises(IntegrityError), seeded:  # unique, through update
            bob = seeded.users.one(name="Bob")
            seeded.users.update(bob, email="ada@example.com")
        seeded.memberships.create(user_id=1, group="g")
        with pytest.raises(IntegrityError), seeded:  # composite primary key
            seeded.memberships.create(user_id=1, group="g", role="other")
        assert seeded.users.one(name="Bob").email == "bob@example.org"
        assert seeded.memberships.count() == 1
    assert everyone(seeded) == before


class LabelBase(DeclarativeBase):
    pass


class Label(LabelBase):
    """A unique constraint over two columns, and Python-side defaults (a value, a callable)."""

    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("owner", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(50))
    rank: Mapped[int] = mapped_column(default=5)
    made_by: Mapped[str] = mapped_column(String(50), default=lambda: "factory")


class Note(LabelBase):
    """A foreign key whose rows go with their label (ON DELETE CASCADE)."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    label_id: Mapped[int] = mapped_column(ForeignKey("labels.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(String(50))


class LabelUnitOfWork(UnitOfWork):
    labels: Repository[Label]
    notes: Repository[Note]


@pytest.fixture
def labels(db: Database) -> LabelUnitOfWork:
    if not isinstance(db, InMemoryDatabase):
        db.create_all(LabelBase.metadata)
    return LabelUnitOfWork(db)


def test_unique_constraints_defaults_and_ondelete(labels: LabelUnitOfWork) -> None:
    with labels:
        first = labels.labels.create(owner="ada", name="red")
        assert (first.id, first.rank, first.made_by) == (1, 5, "factory")
        labels.labels.create(owner="bob", name="red", rank=1)
        with pytest.raises(IntegrityError), labels:
            labels.labels.create(owner="ada", name="red")
        same, created = labels.labels.get_or_create(owner="ada", name="red")
        assert (same.id, created) == (1, False)
        kept = labels.labels.create_or_first(owner="ada", name="red", defaults={"rank": 9})
        assert (kept.id, kept.rank) == (1, 5)
        labels.notes.bulk_create([{"label_id": 1, "text": "a"}, {"label_id": 2, "text": "b"}])
        assert labels.labels.filter(owner="ada").delete() == 1
        assert [n.text for n in labels.notes.all()] == ["b"]  # cascaded
        labels.labels.delete(labels.labels.one(owner="bob"))
        assert labels.notes.count() == 0
        assert labels.labels.count() == 0


# -- transactions ------------------------------------------------------------------------------


def test_commit_rollback_and_savepoints(seeded: AppUnitOfWork) -> None:
    uow = seeded
    with pytest.raises(RuntimeError), uow:
        uow.users.create(email="lost@example.com", name="Lost")
        raise RuntimeError
    with uow:
        uow.users.create(email="kept@example.com", name="Kept")
        with pytest.raises(RuntimeError), uow:
            uow.users.create(email="inner@example.com", name="Inner")
            uow.users.filter(name="Ada").update(age=1)
            raise RuntimeError
        with uow:
            uow.users.create(email="inner2@example.com", name="Inner2")
            uow.set_rollback(True)
        with uow:
            uow.users.create(email="inner3@example.com", name="Inner3")
        uow.users.create(email="undone@example.com", name="Undone")
        uow.rollback()  # the whole outer block so far
        uow.users.create(email="after@example.com", name="After")
        uow.commit()
        uow.users.create(email="uncommitted@example.com", name="U")
        uow.set_rollback(True)
    stored = everyone(uow)
    assert sorted(set(stored) - {"ada@example.com", "bob@example.org"}) == [
        "Dee@Example.com",
        "after@example.com",
        "cy@example.com",
    ]
    assert stored["ada@example.com"] == ("Ada", 36)


def test_changed_attributes_roll_back_too(seeded: AppUnitOfWork) -> None:
    with seeded:
        ada = seeded.users.one(email="ada@example.com")
        with pytest.raises(RuntimeError), seeded:
            ada.age = 99
            seeded.users.filter(name="Bob").update(age=99)
            assert seeded.users.count(age=99) == 2
            raise RuntimeError
        assert seeded.users.count(age=99) == 0
        ada.name = "Ada L."
    assert everyone(seeded)["ada@example.com"] == ("Ada L.", 36)


ABORTED = "aborted by an error caught inside it"


def test_a_flush_error_caught_in_the_outermost_block_commits_nothing(seeded: AppUnitOfWork) -> None:
    before = everyone(seeded)
    with pytest.raises(UnitOfWorkError, match=ABORTED) as raised, seeded:
        seeded.users.create(email="lost@example.com", name="Lost")
        with contextlib.suppress(IntegrityError):  # caught: the transaction is lost all the same
            seeded.users.create(email="nameless@example.com")  # NOT NULL
        with pytest.raises(PendingRollbackError):
            seeded.users.count()
    assert isinstance(raised.value.__cause__, IntegrityError)
    assert everyone(seeded) == before
    with pytest.raises(UnitOfWorkError, match=ABORTED), seeded:  # a unique key, at a flush
        bob, dee = seeded.users.one(name="Bob"), seeded.users.one(name="Dee")
        dee.name = "Lost"
        bob.email = "ada@example.com"
        with contextlib.suppress(IntegrityError):
            seeded.session.flush()
    assert everyone(seeded) == before
    with seeded:  # uow.rollback() makes the block usable again
        seeded.users.create(email="lost@example.com", name="Lost")
        with pytest.raises(IntegrityError):
            seeded.users.create(email="ada@example.com", name="Again")
        seeded.rollback()
        seeded.users.create(email="kept@example.com", name="Kept")
    assert set(everyone(seeded)) - set(before) == {"kept@example.com"}


def test_a_flush_error_caught_in_a_nested_block_undoes_only_that_block(
    seeded: AppUnitOfWork,
) -> None:
    before = everyone(seeded)
    with seeded:
        seeded.users.create(email="kept@example.com", name="Kept")
        with pytest.raises(PendingRollbackError), seeded:  # the savepoint is rolled back
            seeded.users.create(email="lost@example.com", name="Lost")
            seeded.users.one(name="Bob").age = 99
            with contextlib.suppress(IntegrityError):
                seeded.users.create(email="ada@example.com", name="Again")
            with pytest.raises(PendingRollbackError):
                seeded.users.count()
        assert seeded.users.count() == 5
        assert seeded.users.one(name="Bob").age == 17
    assert everyone(seeded) == {**before, "kept@example.com": ("Kept", None)}


def test_a_change_to_an_object_after_its_block_is_not_stored(seeded: AppUnitOfWork) -> None:
    with seeded:
        bob = seeded.users.one(name="Bob")
        post = seeded.posts.one(title="Second")
    bob.name = "Changed outside"  # detached, on a database: nothing stores it
    post.author = bob
    with seeded:
        seeded.users.create(email="new@example.com", name="New")
    assert everyone(seeded)["bob@example.org"] == ("Bob", 17)
    with seeded:
        assert seeded.users.one(email="bob@example.org").name == "Bob"
        assert seeded.posts.one(title="Second").author.name == "Ada"
    assert post.author_id == 1


def test_a_change_after_a_commit_of_the_same_session_is_stored(
    db: Database, uow: AppUnitOfWork
) -> None:
    ada = db.s.create(User, email="ada@example.com", name="Ada")
    db.s.commit()
    ada.name = "Ada L."  # still attached to db.s: its next flush stores it
    db.s.commit()
    db.s.remove()
    assert everyone(uow) == {"ada@example.com": ("Ada L.", None)}


def test_seed_helpers_of_db_s_and_their_transaction(db: Database, uow: AppUnitOfWork) -> None:
    db.s.create(User, email="ada@example.com", name="Ada")
    assert db.s.first_or_create(User, email="ada@example.com").name == "Ada"
    with uow:  # takes the transaction db.s began over, and commits it
        assert emails(db.s.all(User)) == ["ada@example.com"]
        assert uow.users.count() == 1
    assert everyone(uow) == {"ada@example.com": ("Ada", None)}


def test_a_repository_kept_past_its_block_is_refused(seeded: AppUnitOfWork) -> None:
    with seeded:
        users = seeded.users
    with pytest.raises(UnitOfWorkError, match="block that has ended"):
        users.count()
    with seeded:
        assert seeded.users.count() == 4


def test_on_commit(seeded: AppUnitOfWork) -> None:
    uow = seeded
    ran: list[str] = []
    with uow:
        uow.on_commit(lambda: ran.append("outer"))
        with uow:
            uow.on_commit(lambda: ran.append("nested"))
        with pytest.raises(RuntimeError), uow:
            uow.on_commit(lambda: ran.append("rolled back"))
            raise RuntimeError
        assert ran == []
    assert ran == ["outer", "nested"]
    with pytest.raises(RuntimeError), uow:
        uow.on_commit(lambda: ran.append("never"))
        raise RuntimeError
    with uow:
        uow.on_commit(lambda: ran.append("dropped"))
        uow.rollback()
        uow.on_commit(lambda: ran.append("committed"))
        uow.commit()
        assert ran[-1] == "committed"
    assert ran == ["outer", "nested", "committed"]


# -- in memory only ----------------------------------------------------------------------------


class RawUserRepository(Repository[User]):
    def raw(self) -> list[User]:
        return list(self.session.scalars(select(User)))


class RawUnitOfWork(AppUnitOfWork):
    raw_users: RawUserRepository


@pytest.mark.parametrize(
    "run",
    [
        lambda uow: uow.raw_users.raw(),
        lambda uow: uow.session.execute(select(User)),
        lambda uow: uow.users.filter(User.age > 3),
        lambda uow: uow.users.query().statement(),
        lambda uow: uow.users.query().order_by(User.name.collate("C")).all(),
    ],
    ids=["custom method", "uow.session", "raw filter", "statement", "raw order"],
)
def test_sql_in_memory_is_a_clear_error(run: Callable[[RawUnitOfWork], object]) -> None:
    uow = RawUnitOfWork(InMemoryDatabase())
    with uow, pytest.raises(InMemorySQLError, match="InMemoryDatabase runs none"):
        run(uow)


def test_the_memory_classes_are_the_users_own_with_the_memory_ones_under_them() -> None:
    uow = AppUnitOfWork(InMemoryDatabase())
    with uow:
        users = uow.users
        assert type(users).__name__ == "InMemoryUserRepository"
        assert isinstance(users, type(users).__mro__[1])
        assert type(users).__mro__[1].__name__ == "UserRepository"
        assert isinstance(uow.posts, Repository)


class AsyncUserRepository(AsyncRepository[User]):
    async def adults(self) -> list[User]:
        return await self.filter(age__gte=18).order_by("-age", "email").all()


class AsyncAppUnitOfWork(AsyncUnitOfWork):
    users: AsyncUserRepository
    posts: AsyncRepository[Post]


async def test_the_async_face_runs_the_same_memory_code() -> None:
    adb = AsyncInMemoryDatabase()
    uow = AsyncAppUnitOfWork(adb)
    ran: list[int] = []
    async with uow:
        ada = await uow.users.create(email="ada@example.com", name="Ada", age=36)
        await uow.users.create(email="bob@example.org", name="Bob", age=17)
        await uow.posts.create(title="Hello", author=ada)
        uow.on_commit(lambda: ran.append(ada.id))
    assert ran == [1]
    async with uow:
        assert emails(await uow.users.adults()) == ["ada@example.com"]
        assert await uow.posts.filter(author__name="Ada").count() == 1
        user, created = await uow.users.get_or_create(email="ada@example.com")
        assert (user.name, created) == ("Ada", False)
        with pytest.raises(IntegrityError):
            async with uow:
                await uow.users.create(email="ada@example.com", name="Again")
        assert [u.name async for u in uow.users.iterator(chunk_size=1)] == ["Ada", "Bob"]
        page = await uow.users.paginate(1, 1)
        assert (page.total, page.has_next) == (2, True)
        with pytest.raises(InMemorySQLError):
            await uow.session.execute(select(User))
        await uow.rollback()
    async with adb.session_scope():
        assert await adb.s().get(User, 1) is not None
        assert (await adb.s.first(User, email="ada@example.com")).name == "Ada"  # type: ignore[union-attr]
    await adb.s.remove()
    await adb.dispose()


def test_rows_shows_what_is_stored() -> None:
    db = InMemoryDatabase()
    with AppUnitOfWork(db) as uow:
        uow.users.create(email="ada@example.com", name="Ada")
        assert [u.email for u in db.rows(User)] == ["ada@example.com"]
    assert [m.group for m in db.rows(Membership)] == []


@pytest.mark.parametrize("flushed", [True, False])
def test_a_rolled_back_link_stays_undone(seeded: AppUnitOfWork, flushed: bool) -> None:
    with seeded:
        post = seeded.posts.one(title="Second")
        bob = seeded.users.one(name="Bob")
        with pytest.raises(RuntimeError), seeded:
            post.author = bob
            if flushed:
                seeded.session.flush()
            raise RuntimeError
        seeded.users.create(email="new@example.com", name="New")  # flushes
        assert (post.author.name, post.author_id) == ("Ada", 1)
    with seeded:
        assert seeded.posts.one(title="Second").author.name == "Ada"
