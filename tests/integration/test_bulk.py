"""bulk_create, in_bulk, update_or_create and streaming with iterator(), on SQLite and PostgreSQL
(the `db` fixture is parametrized by backend)."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import ForeignKey, String, cast, func, insert, inspect, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from repositories import FieldError, MultipleObjectsReturned, Repository
from repositories._dialects import parameter_limit
from tests.integration.helpers import BEFORE_AND_AFTER, seed, stored
from tests.models import AppUnitOfWork, Membership, Post, User
from uow import Database
from uow.testing import count_statements

pytestmark = [pytest.mark.both_faces, pytest.mark.through_pgbouncer]

MiB = 1024 * 1024


class UserIn(BaseModel):
    email: str
    name: str
    # A pydantic default that must never reach the database unless the caller set it.
    age: int | None = 99


class UserWithPassword(BaseModel):
    email: str
    name: str
    password: str


def insert_generated_users(uow: AppUnitOfWork, count: int) -> None:
    """INSERT ... SELECT `count` users from a recursive CTE: one statement, no Python rows."""
    seq = select(literal(1).label("i")).cte("seq", recursive=True)
    seq = seq.union_all(select(seq.c.i + 1).where(seq.c.i < count))
    rows = select(
        literal("user") + cast(seq.c.i, String) + literal("@example.com"),
        literal("Generated"),
        seq.c.i % 90,
    )
    uow.session.execute(insert(User).from_select(["email", "name", "age"], rows))


# -- bulk_create -------------------------------------------------------------------------------


@pytest.mark.parametrize("return_objects", [True, False])
def test_bulk_create_takes_dicts_pydantic_models_and_instances_with_mixed_keys(
    db: Database, uow: AppUnitOfWork, return_objects: bool
) -> None:
    items: list[Any] = [
        {"email": "d1@example.com", "name": "Dict"},  # fewer keys than later rows
        UserIn(email="p1@example.com", name="Pydantic"),  # age unset: NULL, not 99
        User(email="i1@example.com", name="Instance", age=3),
        {"email": "d2@example.com", "name": "Dict", "age": 1},
        UserIn(email="p2@example.com", name="Pydantic", age=5),
        User(email="i2@example.com", name="Instance"),
    ]
    with uow:
        created = uow.users.bulk_create(items, return_objects=return_objects)
        if return_objects:
            check_the_objects_are_the_sessions_in_input_order(db, uow, created)
        else:
            assert created == []
    assert stored(db) == {
        "d1@example.com": ("Dict", None),
        "p1@example.com": ("Pydantic", None),
        "i1@example.com": ("Instance", 3),
        "d2@example.com": ("Dict", 1),
        "p2@example.com": ("Pydantic", 5),
        "i2@example.com": ("Instance", None),
    }


def check_the_objects_are_the_sessions_in_input_order(
    db: Database, uow: AppUnitOfWork, created: list[User]
) -> None:
    assert [u.email for u in created] == [
        "d1@example.com",
        "p1@example.com",
        "i1@example.com",
        "d2@example.com",
        "p2@example.com",
        "i2@example.com",
    ]
    assert [u.age for u in created] == [None, None, 3, 1, 5, None]
    assert all(isinstance(u, User) and isinstance(u.id, int) for u in created)
    assert len({u.id for u in created}) == 6
    with count_statements(db.engine) as log:
        for user in created:
            assert uow.users.get(user.id) is user  # in the identity map: no SQL
    assert log.statements == []
    by_email = {u.email: u.id for u in uow.users.all()}
    assert {u.email: u.id for u in created} == by_email


def test_bulk_create_of_1000_rows_uses_a_few_multi_row_inserts(
    db: Database, uow: AppUnitOfWork
) -> None:
    rows = [{"email": f"u{i:04d}@example.com", "name": "N", "age": i % 7} for i in range(1000)]
    with uow:
        with count_statements(db.engine) as log:
            created = uow.users.bulk_create(rows)
        assert [u.email for u in created] == [row["email"] for row in rows]
        assert len({u.id for u in created}) == 1000
    inserts = log.matching("INSERT")
    assert 1 <= len(inserts) <= 10, f"{len(inserts)} INSERT statements for 1000 rows"
    assert len(stored(db)) == 1000


def test_bulk_create_batch_size_splits_the_rows_into_separate_inserts(
    db: Database, uow: AppUnitOfWork
) -> None:
    rows = [{"email": f"u{i}@example.com", "name": "N"} for i in range(10)]
    with uow:
        with count_statements(db.engine) as log:
            created = uow.users.bulk_create(rows, batch_size=3)
        assert [u.email for u in created] == [row["email"] for row in rows]
        assert all(isinstance(u.id, int) for u in created)
    assert len(log.matching("INSERT")) >= 4
    assert len(stored(db)) == 10


def test_bulk_create_ignore_conflicts_skips_duplicates_and_leaves_them_out(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, ("old@example.com", "Old", 1))
    items: list[Any] = [
        {"email": "a@example.com", "name": "A"},
        {"email": "old@example.com", "name": "Duplicate of a stored row"},
        UserIn(email="b@example.com", name="B", age=2),
        {"email": "a@example.com", "name": "Duplicate within the input"},
        User(email="c@example.com", name="C"),
    ]
    with uow:
        created = uow.users.bulk_create(items, ignore_conflicts=True)
        assert [(u.email, u.name, u.age) for u in created] == [
            ("a@example.com", "A", None),
            ("b@example.com", "B", 2),
            ("c@example.com", "C", None),
        ]
        assert all(isinstance(u.id, int) for u in created)
        assert {u.email: u.id for u in created} == {
            u.email: u.id
            for u in uow.users.all(email__in=["a@example.com", "b@example.com", "c@example.com"])
        }
        again = uow.users.bulk_create(
            [{"email": "old@example.com", "name": "X"}], ignore_conflicts=True
        )
        assert again == []
    assert stored(db) == {
        "old@example.com": ("Old", 1),
        "a@example.com": ("A", None),
        "b@example.com": ("B", 2),
        "c@example.com": ("C", None),
    }


@pytest.mark.parametrize("return_objects", [True, False])
def test_bulk_create_ignore_conflicts_with_rows_that_bring_their_own_primary_key(
    db: Database, uow: AppUnitOfWork, return_objects: bool
) -> None:
    [old] = seed(uow, ("old@example.com", "Old", 1))
    with uow:
        uow.memberships.create(user_id=old.id, group="admins")
    with uow:
        users = uow.users.bulk_create(
            [
                {"id": old.id, "email": "clash@example.com", "name": "Same id"},
                {"id": old.id + 100, "email": "new@example.com", "name": "New"},
                {"id": old.id + 50, "email": "other@example.com", "name": "Other"},
            ],
            ignore_conflicts=True,
            return_objects=return_objects,
        )
        memberships = uow.memberships.bulk_create(
            [
                {"user_id": old.id, "group": "editors"},
                {"user_id": old.id, "group": "admins", "role": "owner"},  # composite key clash
                {"user_id": old.id, "group": "readers"},
            ],
            ignore_conflicts=True,
            return_objects=return_objects,
        )
        if return_objects:
            assert [(u.id, u.email) for u in users] == [
                (old.id + 100, "new@example.com"),
                (old.id + 50, "other@example.com"),
            ]
            assert [(m.group, m.role) for m in memberships] == [
                ("editors", "member"),
                ("readers", "member"),
            ]
        else:
            assert users == memberships == []
    assert stored(db) == {
        "old@example.com": ("Old", 1),
        "new@example.com": ("New", None),
        "other@example.com": ("Other", None),
    }
    with db.Session() as session:
        groups = session.execute(select(Membership.group, Membership.role).order_by("group"))
        assert groups.all() == [("admins", "member"), ("editors", "member"), ("readers", "member")]


@pytest.mark.parametrize(
    "emails",
    [["new@example.com", "old@example.com"], ["new@example.com", "x@example.com", "x@example.com"]],
    ids=["duplicate of a stored row", "duplicate within the input"],
)
def test_bulk_create_without_ignore_conflicts_raises_integrity_error_on_a_duplicate(
    db: Database, uow: AppUnitOfWork, emails: list[str]
) -> None:
    seed(uow, ("old@example.com", "Old", 1))
    with pytest.raises(IntegrityError), uow:
        uow.users.bulk_create([{"email": e, "name": "N"} for e in emails])
    assert stored(db) == {"old@example.com": ("Old", 1)}


def test_bulk_create_of_nothing_runs_no_sql(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        uow.users.count()
        with count_statements(db.engine) as log:
            assert uow.users.bulk_create([]) == []
            assert uow.users.bulk_create(iter(())) == []
            assert uow.users.bulk_create([], batch_size=5, ignore_conflicts=True) == []
    assert log.statements == []


@pytest.mark.parametrize("batch_size", [0, -1, True, False, "3", 2.5])
def test_bulk_create_rejects_a_batch_size_that_is_not_a_positive_int(
    db: Database, uow: AppUnitOfWork, batch_size: Any
) -> None:
    with uow, count_statements(db.engine) as log:
        with pytest.raises(ValueError, match="batch_size"):
            uow.users.bulk_create([{"email": "a@example.com", "name": "A"}], batch_size=batch_size)
    assert log.statements == []
    assert stored(db) == {}


BAD_ITEMS: dict[str, Any] = {
    "dict": {"email": "bad@example.com", "name": "Bad", "nmae": "X"},
    "pydantic": UserWithPassword(email="bad@example.com", name="Bad", password="secret"),
    "relationship": {"email": "bad@example.com", "name": "Bad", "posts": []},
}


@pytest.mark.parametrize("bad", list(BAD_ITEMS.values()), ids=list(BAD_ITEMS))
def test_bulk_create_unknown_key_raises_field_error_before_any_sql(
    db: Database, uow: AppUnitOfWork, bad: Any
) -> None:
    good = [{"email": f"g{i}@example.com", "name": "Good"} for i in range(3)]
    with uow:
        uow.users.count()
        with count_statements(db.engine) as log, pytest.raises(FieldError) as info:
            uow.users.bulk_create([*good, bad], batch_size=1)
        assert log.statements == []
        uow.users.create(email="after@example.com", name="After")
    assert any(name in str(info.value) for name in ("nmae", "password", "posts"))
    assert stored(db) == {"after@example.com": ("After", None)}


def test_bulk_create_instances_take_the_key_of_the_object_a_many_to_one_refers_to(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        ada = uow.users.create(email="ada@example.com", name="Ada")
        bob = User(email="bob@example.com", name="Bob")
        uow.session.add(bob)  # pending: bulk_create's flush gives it its key
        posts = uow.posts.bulk_create(
            [
                Post(title="By Ada", author=ada),
                Post(title="By Bob", author=bob),
                Post(title="Relationship wins", author_id=ada.id, author=bob),
            ]
        )
        assert [(p.title, p.author_id) for p in posts] == [
            ("By Ada", ada.id),
            ("By Bob", bob.id),
            ("Relationship wins", bob.id),
        ]
        assert posts[0].author is ada
        assert ada.posts == [posts[0]]  # the collections hold the new rows, not the instances
        assert bob.posts == posts[1:]
    with db.Session() as session:
        rows = session.execute(select(Post.title, User.email).join(Post.author).order_by(Post.id))
        assert rows.all() == [
            ("By Ada", "ada@example.com"),
            ("By Bob", "bob@example.com"),
            ("Relationship wins", "bob@example.com"),
        ]


def test_bulk_create_refuses_instances_whose_related_objects_it_cannot_save(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        unsaved = User(email="ghost@example.com", name="Ghost")  # never added to the session
        with pytest.raises(FieldError, match=r"Post\.author") as info:
            uow.posts.bulk_create([Post(title="Orphan", author=unsaved)])
        assert "no primary key" in str(info.value)
        with count_statements(db.engine) as log, pytest.raises(FieldError, match=r"User\.posts"):
            uow.users.bulk_create(
                [User(email="x@example.com", name="X", posts=[Post(title="Lost")])]
            )
        assert log.statements == []
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == BEFORE_AND_AFTER
    with db.Session() as session:
        assert session.scalars(select(Post)).all() == []


class LocalBase(DeclarativeBase):
    pass


class Writer(LocalBase):
    __tablename__ = "writers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Note(LocalBase):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    writer_id: Mapped[int] = mapped_column(ForeignKey("writers.id"))
    writer: Mapped[Writer] = relationship()  # no backref
    shown_as: Mapped[Writer] = relationship(viewonly=True)  # a flush ignores it


def test_bulk_create_follows_a_many_to_one_without_backref_and_ignores_a_viewonly_one(
    db: Database,
) -> None:
    LocalBase.metadata.create_all(db.engine)
    try:
        with db.Session() as session, session.begin():
            ann, bob = Writer(name="Ann"), Writer(name="Bob")
            session.add_all([ann, bob])
            session.flush()
            notes = Repository(session, Note).bulk_create(
                [Note(writer=ann, shown_as=bob), Note(writer_id=bob.id, shown_as=ann)]
            )
            assert [note.writer_id for note in notes] == [ann.id, bob.id]
            assert inspect(ann).unloaded == set()  # nothing of the related object was expired
        assert ann.name == "Ann"  # still readable after the session closed
    finally:
        LocalBase.metadata.drop_all(db.engine)


def test_bulk_create_leaves_the_given_instances_as_they_were(uow: AppUnitOfWork) -> None:
    with uow:
        bob = User(email="bob@example.com", name="Bob")
        uow.session.add(bob)  # pending, shared by every instance
        given = [Post(title=f"Post {n}", author=bob) for n in range(3)]
        created = uow.posts.bulk_create(given)
        assert all(post.author is bob for post in given)
        assert all(inspect(post).transient for post in given)
        assert bob.posts == created


# -- in_bulk -----------------------------------------------------------------------------------


def test_in_bulk_by_id_leaves_missing_ids_out(db: Database, uow: AppUnitOfWork) -> None:
    ada, bob, _cy = seed(
        uow,
        ("ada@example.com", "Ada", 1),
        ("bob@example.com", "Bob", 2),
        ("cy@example.com", "Cy", 3),
    )
    missing = max(ada.id, bob.id, _cy.id) + 100
    with uow:
        found = uow.users.in_bulk([ada.id, missing, bob.id, ada.id])
        assert set(found) == {ada.id, bob.id}
        assert (found[ada.id].email, found[bob.id].email) == ("ada@example.com", "bob@example.com")
        assert uow.users.in_bulk(iter([bob.id])) == {bob.id: found[bob.id]}
        with count_statements(db.engine) as log:
            assert uow.users.in_bulk([]) == {}
        assert log.statements == []


def test_in_bulk_by_a_unique_field(uow: AppUnitOfWork) -> None:
    seed(uow, ("ada@example.com", "Ada", 1), ("bob@example.com", "Bob", 2))
    with uow:
        found = uow.users.in_bulk(
            ["bob@example.com", "nobody@example.com", "ada@example.com"], field_name="email"
        )
    assert {email: user.name for email, user in found.items()} == {
        "ada@example.com": "Ada",
        "bob@example.com": "Bob",
    }


@pytest.mark.parametrize("field_name", ["name", "age", "nmae", "posts"])
def test_in_bulk_by_a_field_that_is_not_unique_raises_field_error_before_sql(
    db: Database, uow: AppUnitOfWork, field_name: str
) -> None:
    seed(uow, ("ada@example.com", "Ada", 1))
    with uow, count_statements(db.engine) as log, pytest.raises(FieldError, match=field_name):
        uow.users.in_bulk(["Ada"], field_name=field_name)
    assert log.statements == []


def test_in_bulk_with_more_ids_than_one_statement_may_bind(
    db: Database, uow: AppUnitOfWork
) -> None:
    # 70,000 values: over what one statement binds on PostgreSQL (32,767 with asyncpg, 65,535
    # with psycopg) and SQLite (32,766 by default), so a single IN (...) would fail on
    # PostgreSQL (and SQLite builds with the default limit).
    with uow:
        insert_generated_users(uow, 2500)
    with uow:
        stored_ids = list(uow.session.scalars(select(User.id)))
        top = max(stored_ids)
        ids = [*stored_ids, *range(top + 1, top + 1 + 70_000 - len(stored_ids))]
        with count_statements(db.engine) as log:
            found = uow.users.in_bulk(ids)
    assert len(ids) == 70_000
    assert sorted(found) == sorted(stored_ids)
    assert len(found) == 2500
    assert all(found[pk].id == pk for pk in stored_ids)
    # One IN (...) per chunk, each as large as one statement may bind (what `filter(id__in=)`
    # accepts too): 70,000 values are 3 chunks on PostgreSQL, 1 on a SQLite build that binds
    # 250,000.
    limit = parameter_limit(db.engine.dialect.name)
    assert len(log.matching("SELECT")) == -(-len(ids) // limit)


# -- update_or_create --------------------------------------------------------------------------


def test_update_or_create_creates_with_create_defaults_or_else_defaults(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        ada, ada_created = uow.users.update_or_create(
            email="ada@example.com",
            defaults={"name": "Updated", "age": 1},
            create_defaults={"name": "Created"},
        )
        # The defaults win over the lookups when creating (Django's rule).
        bob, bob_created = uow.users.update_or_create(
            defaults=UserIn(email="bob@example.org", name="Bob"), email="bob@example.com"
        )
        assert (ada_created, bob_created) == (True, True)
        assert isinstance(ada.id, int)
        assert isinstance(bob.id, int)
    assert stored(db) == {"ada@example.com": ("Created", None), "bob@example.org": ("Bob", None)}


def test_update_or_create_updates_the_found_row_with_defaults(
    db: Database, uow: AppUnitOfWork
) -> None:
    [ada] = seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        loaded = uow.users.one(email="ada@example.com")
        obj, created = uow.users.update_or_create(
            email__iexact="ADA@EXAMPLE.COM",
            defaults={"age": 37},
            create_defaults={"name": "Never", "age": 0},
        )
        assert created is False
        assert obj is loaded
        assert (obj.id, obj.name, obj.age) == (ada.id, "Ada", 37)
        again, created_again = uow.users.update_or_create(
            email="ada@example.com", defaults={"name": "Augusta"}
        )
        assert (again is loaded, created_again) == (True, False)
    assert stored(db) == {"ada@example.com": ("Augusta", 37)}


def test_update_or_create_locks_the_row_with_select_for_update(
    db: Database, uow: AppUnitOfWork, backend: str
) -> None:
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        uow.users.count()
        with count_statements(db.engine) as found_log:
            uow.users.update_or_create(email="ada@example.com", defaults={"age": 40})
        with count_statements(db.engine) as created_log:
            uow.users.update_or_create(email="bob@example.com", defaults={"name": "Bob"})
    for log in (found_log, created_log):
        lookup = [s for s in log.matching("SELECT") if "users.email" in s]
        assert lookup, log.statements
        if backend == "postgresql":
            assert "FOR UPDATE" in lookup[0].upper()
    assert found_log.matching("UPDATE")
    assert created_log.matching("INSERT")
    assert stored(db) == {"ada@example.com": ("Ada", 40), "bob@example.com": ("Bob", None)}


def test_update_or_create_raises_multiple_objects_returned_and_changes_nothing(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, ("a1@example.com", "Ann", 1), ("a2@example.com", "Ann", 2))
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(MultipleObjectsReturned):
            uow.users.update_or_create(name="Ann", defaults={"age": 99})
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == {
        "a1@example.com": ("Ann", 1),
        "a2@example.com": ("Ann", 2),
        "before@example.com": ("Before", None),
        "after@example.com": ("After", None),
    }


def test_update_or_create_with_an_in_lookup_that_matches_nothing_creates(
    db: Database, uow: AppUnitOfWork
) -> None:
    # `email__in=[]` can match no row (Query runs no SQL for it), so the lookup misses and a
    # row is created from create_defaults; an unrelated stored row must not be updated.
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        obj, created = uow.users.update_or_create(
            email__in=[],
            defaults={"name": "Changed"},
            create_defaults={"email": "new@example.com", "name": "New"},
        )
        assert (obj.email, created) == ("new@example.com", True)
    assert stored(db) == {"ada@example.com": ("Ada", 36), "new@example.com": ("New", None)}


BAD_UPDATE_OR_CREATE: dict[str, dict[str, Any]] = {
    "lookup": {"nmae": "Ada"},
    "operator": {"email__like": "ada"},
    "defaults": {"email": "ada@example.com", "defaults": {"nmae": "X"}},
    "create_defaults": {"email": "ada@example.com", "create_defaults": {"nmae": "X"}},
    "pydantic defaults": {
        "email": "ada@example.com",
        "defaults": UserWithPassword(email="a@example.com", name="A", password="secret"),
    },
}


@pytest.mark.parametrize("kwargs", BAD_UPDATE_OR_CREATE.values(), ids=list(BAD_UPDATE_OR_CREATE))
def test_update_or_create_unknown_key_raises_field_error_before_sql(
    db: Database, uow: AppUnitOfWork, kwargs: dict[str, Any]
) -> None:
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        uow.users.count()
        with count_statements(db.engine) as log, pytest.raises(FieldError):
            uow.users.update_or_create(**kwargs)
        assert log.statements == []
    assert stored(db) == {"ada@example.com": ("Ada", 36)}


def test_update_or_create_failing_to_create_leaves_the_outer_transaction_usable(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(IntegrityError):
            uow.users.update_or_create(email="nameless@example.com", defaults={"age": 1})
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == {
        "before@example.com": ("Before", None),
        "after@example.com": ("After", None),
    }


def test_update_or_create_failing_to_update_leaves_the_outer_transaction_usable(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, ("ada@example.com", "Ada", 36), ("bob@example.com", "Bob", 20))
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with pytest.raises(IntegrityError):  # the new email belongs to Bob
            uow.users.update_or_create(
                email="ada@example.com", defaults={"email": "bob@example.com", "age": 1}
            )
        uow.users.create(email="after@example.com", name="After")
    assert stored(db) == {
        "ada@example.com": ("Ada", 36),
        "bob@example.com": ("Bob", 20),
        "before@example.com": ("Before", None),
        "after@example.com": ("After", None),
    }


# -- streaming ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.direct_only("the memory bound is not the pooler's (test_streaming streams through it)")
def test_iterator_streams_200k_rows_in_bounded_memory(db: Database, uow: AppUnitOfWork) -> None:
    total = 200_000
    with uow:
        insert_generated_users(uow, total)
    with uow:
        expected_sum = uow.session.scalar(select(func.sum(User.id)))
        gc.collect()
        tracemalloc.start()
        try:
            # Iterate without keeping references: the session holds unmodified objects weakly.
            seen = id_sum = 0
            baseline = tracemalloc.get_traced_memory()[0]
            for user in uow.users.iterator(chunk_size=1000):
                seen += 1
                id_sum += user.id
            del user
            streamed = tracemalloc.get_traced_memory()[1] - baseline
            gc.collect()
            baseline = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            everyone = uow.users.all()
            listed = tracemalloc.get_traced_memory()[1] - baseline
            assert len(everyone) == total
            del everyone
        finally:
            tracemalloc.stop()
    assert (seen, id_sum) == (total, expected_sum)
    assert streamed < 50 * MiB, f"streaming peaked at {streamed / MiB:.1f} MiB"
    assert listed > 5 * streamed, (listed / MiB, streamed / MiB)


def test_iterator_streams_the_filtered_ordered_rows_in_chunks(uow: AppUnitOfWork) -> None:
    with uow:
        insert_generated_users(uow, 250)
    with uow:
        expected = [u.email for u in uow.users.filter(age__lt=30).order_by("-age", "email")]
        streamed = [
            u.email for u in uow.users.filter(age__lt=30).order_by("-age", "email").iterator(7)
        ]
        via_repository = [u.email for u in uow.users.iterator(chunk_size=3, age__lt=30)]
        assert list(uow.users.filter(id__in=[]).iterator(5)) == []
    assert len(expected) == sum(1 for i in range(1, 251) if i % 90 < 30)
    assert streamed == expected
    assert sorted(via_repository) == sorted(expected)


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_iterator_rejects_a_chunk_size_below_one_when_called(
    db: Database, uow: AppUnitOfWork, chunk_size: int
) -> None:
    with uow, count_statements(db.engine) as log:
        with pytest.raises(ValueError, match="chunk_size"):
            uow.users.iterator(chunk_size=chunk_size)
        with pytest.raises(ValueError, match="chunk_size"):
            uow.users.filter(age__gte=1).iterator(chunk_size)
    assert log.statements == []
