"""The repository core on real databases: reads, writes, validation, construction.

Every test runs on SQLite and on PostgreSQL (the `db` fixture is parametrized by backend).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy.orm
from pydantic import BaseModel

from repositories import (
    DoesNotExist,
    FieldError,
    MultipleObjectsReturned,
    Repository,
)
from tests.integration.helpers import BEFORE_AND_AFTER, seed, stored
from tests.models import AppUnitOfWork, Membership, Post, User, UserRepository
from uow import Database, Session
from uow.testing import count_statements

pytestmark = [pytest.mark.both_faces, pytest.mark.through_pgbouncer]


class UserIn(BaseModel):
    email: str
    name: str
    # A pydantic default that must never reach the database unless the caller set it.
    age: int | None = 99


class UserPatch(BaseModel):
    name: str | None = None
    age: int | None = None


class UserWithPassword(BaseModel):
    email: str
    password: str


class NotMapped:
    pass


# -- reading -----------------------------------------------------------------------------------


def test_get_returns_the_loaded_object_from_the_identity_map_without_sql(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        ada = uow.users.create(email="ada@example.com", name="Ada")
        with count_statements(db.engine) as log:
            again = uow.users.get(ada.id)
    assert again is ada
    assert log.statements == []


def test_get_selects_by_primary_key_when_the_object_is_not_loaded(
    db: Database, uow: AppUnitOfWork
) -> None:
    [ada] = seed(uow, ("ada@example.com", "Ada", 36))
    with uow, count_statements(db.engine) as log:
        loaded = uow.users.get(ada.id)
        assert loaded is not None
        assert (loaded.email, loaded.age) == ("ada@example.com", 36)
    assert len(log.matching("SELECT")) == 1


def test_get_takes_a_tuple_for_a_composite_primary_key(uow: AppUnitOfWork) -> None:
    [ada] = seed(uow, ("ada@example.com", "Ada", None))
    with uow:
        uow.memberships.create(user_id=ada.id, group="admins", role="owner")
        uow.memberships.create(user_id=ada.id, group="staff")
    with uow:
        admins = uow.memberships.get((ada.id, "admins"))
        staff = uow.memberships.get((ada.id, "staff"))
        assert uow.memberships.get((ada.id, "nobody")) is None
    assert admins is not None
    assert admins.role == "owner"
    assert staff is not None
    assert staff.role == "member"


def test_get_returns_none_for_a_missing_primary_key(uow: AppUnitOfWork) -> None:
    seed(uow, ("ada@example.com", "Ada", None))
    with uow:
        assert uow.users.get(987654) is None


@pytest.mark.parametrize(
    ("pk", "error"),
    [("abc", "Users?.id holds int"), (2**70, "Users?.id holds int"), (1.5, "holds int")],
    ids=["text", "beyond 64 bits", "float"],
)
def test_get_refuses_a_key_of_the_wrong_type_before_sql_and_the_block_goes_on(
    db: Database, uow: AppUnitOfWork, pk: object, error: str
) -> None:
    seed(uow, ("ada@example.com", "Ada", None))
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with count_statements(db.engine) as log, pytest.raises(FieldError, match=error):
            uow.users.get(pk)
        assert log.statements == []
        uow.users.create(email="after@example.com", name="After")
    assert set(stored(db)) == {"ada@example.com", *BEFORE_AND_AFTER}


def test_get_answers_a_key_wider_than_its_column_with_none_without_sql(
    db: Database, uow: AppUnitOfWork
) -> None:
    # users.id is an INTEGER: PostgreSQL refuses 2**40 (aborting the transaction); no row can
    # have it, so the answer is None, as filter(id=2**40) answers with nothing.
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with count_statements(db.engine) as log:
            found = uow.users.get(2**40)
        assert found is None
        if db.engine.dialect.name == "postgresql":
            assert log.statements == []
        uow.users.create(email="after@example.com", name="After")
    assert set(stored(db)) == set(BEFORE_AND_AFTER)


def test_get_checks_each_part_of_a_composite_key(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        with pytest.raises(FieldError, match="group"):
            uow.memberships.get((1, 2))
        assert uow.memberships.get((1, "admins")) is None
        assert uow.memberships.get({"user_id": 1, "group": "admins"}) is None
        with pytest.raises(FieldError, match="not part of User's primary key; get"):
            uow.users.get({"email": "ada@example.com"})


def test_one_returns_the_single_matching_object(uow: AppUnitOfWork) -> None:
    seed(uow, ("ada@example.com", "Ada", 36), ("bob@example.com", "Bob", 20))
    with uow:
        bob = uow.users.one(email="bob@example.com")
    assert (bob.name, bob.age) == ("Bob", 20)


def test_one_raises_does_not_exist_which_is_a_lookup_error(uow: AppUnitOfWork) -> None:
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        with pytest.raises(DoesNotExist) as info:
            uow.users.one(email="nobody@example.com")
        assert isinstance(info.value, LookupError)
        with pytest.raises(LookupError):
            uow.users.one(name="Nobody")


def test_one_raises_multiple_objects_returned_when_several_rows_match(
    uow: AppUnitOfWork,
) -> None:
    seed(uow, ("a1@example.com", "Ann", 1), ("a2@example.com", "Ann", 2))
    with uow, pytest.raises(MultipleObjectsReturned):
        uow.users.one(name="Ann")


def test_first_is_ordered_by_primary_key(db: Database, uow: AppUnitOfWork) -> None:
    # Inserted out of key order, with emails sorting the other way round, so neither insertion
    # order nor the email index can pass for primary-key order.
    with uow:
        for pk, email in [(3, "a@example.com"), (1, "c@example.com"), (2, "b@example.com")]:
            uow.users.create(id=pk, email=email, name="Same")
    with uow, count_statements(db.engine) as log:
        first = uow.users.first(name="Same")
        first_in = uow.users.first(email__in=["a@example.com", "b@example.com"])
        oldest = uow.users.filter(name="Same").order_by("-id").first()
    assert first is not None
    assert first.id == 1
    assert first_in is not None
    assert first_in.id == 2
    assert oldest is not None
    assert oldest.id == 3
    assert all("ORDER BY" in statement for statement in log.statements)


def test_first_returns_none_when_nothing_matches(uow: AppUnitOfWork) -> None:
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        assert uow.users.first(name="Nobody") is None


def test_all_returns_every_row_without_lookups_and_the_matching_ones_with_them(
    uow: AppUnitOfWork,
) -> None:
    seed(uow, ("a@example.com", "Ann", 30), ("b@example.com", "Bob", 30), ("c@x.org", "Ann", 5))
    with uow:
        everyone = uow.users.all()
        anns = uow.users.all(name="Ann")
        ann_30 = uow.users.all(name="Ann", age=30)
    assert sorted(u.email for u in everyone) == ["a@example.com", "b@example.com", "c@x.org"]
    assert sorted(u.email for u in anns) == ["a@example.com", "c@x.org"]
    assert [u.email for u in ann_30] == ["a@example.com"]


def test_count_counts_the_matching_rows(uow: AppUnitOfWork) -> None:
    with uow:
        assert uow.users.count() == 0
    seed(uow, ("a@example.com", "Ann", 30), ("b@example.com", "Bob", 30), ("c@x.org", "Ann", 5))
    with uow:
        assert uow.users.count() == 3
        assert uow.users.count(name="Ann") == 2
        assert uow.users.count(name="Ann", age=5) == 1
        assert uow.users.count(name="Nobody") == 0


def test_exists_runs_one_select_exists_statement(db: Database, uow: AppUnitOfWork) -> None:
    seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        uow.users.count()  # the block's connection is open before counting
        with count_statements(db.engine) as hit:
            assert uow.users.exists(name="Ada") is True
        with count_statements(db.engine) as miss:
            assert uow.users.exists(name="Nobody") is False
    for log in (hit, miss):
        assert log.count == 1
        assert log.statements[0].lstrip().upper().startswith("SELECT")
        assert "EXISTS" in log.statements[0].upper()


def test_filter_and_exclude_with_equality(uow: AppUnitOfWork) -> None:
    seed(uow, ("a@example.com", "Ann", 30), ("b@example.com", "Bob", 30), ("c@x.org", "Ann", 5))
    with uow:
        anns = uow.users.filter(name="Ann").all()
        not_anns = uow.users.exclude(name="Ann").all()
        not_ann_30 = uow.users.exclude(name="Ann", age=30).all()  # NOT (a AND b)
        chained = uow.users.filter(age=30).exclude(name="Bob").all()
    assert sorted(u.email for u in anns) == ["a@example.com", "c@x.org"]
    assert [u.email for u in not_anns] == ["b@example.com"]
    assert sorted(u.email for u in not_ann_30) == ["b@example.com", "c@x.org"]
    assert [u.email for u in chained] == ["a@example.com"]


def test_exclude_keeps_rows_whose_column_is_null(uow: AppUnitOfWork) -> None:
    # A row with age NULL does not match age=5, so excluding age=5 must keep it (Django's
    # exclude; Query.exclude says it drops only the rows matching the lookups).
    seed(uow, ("five@example.com", "Five", 5), ("unknown@example.com", "Unknown", None))
    with uow:
        kept = uow.users.exclude(age=5).all()
        assert uow.users.exclude(age=5).count() == 1
    assert [u.email for u in kept] == ["unknown@example.com"]


def test_filter_accepts_a_raw_sqlalchemy_expression_positionally(uow: AppUnitOfWork) -> None:
    seed(uow, ("a@example.com", "Ann", 2), ("b@example.com", "Bob", 4), ("c@example.com", "Cy", 9))
    with uow:
        older = uow.users.filter(User.age > 3).all()
        older_bob = uow.users.filter(User.age > 3, name="Bob").all()
        assert uow.users.count(User.age > 3) == 2
        assert uow.users.all(User.age > 100) == []
    assert sorted(u.email for u in older) == ["b@example.com", "c@example.com"]
    assert [u.email for u in older_bob] == ["b@example.com"]


# -- writing -----------------------------------------------------------------------------------


def test_create_from_a_dict_flushes_so_the_primary_key_is_set(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        with count_statements(db.engine) as log:
            ada = uow.users.create({"email": "ada@example.com", "name": "Ada", "age": 36})
        assert isinstance(ada.id, int)
        assert log.matching("INSERT")
        assert uow.users.get(ada.id) is ada
    assert stored(db) == {"ada@example.com": ("Ada", 36)}


def test_create_from_a_pydantic_model_uses_only_the_fields_that_were_set(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        ada = uow.users.create(UserIn(email="ada@example.com", name="Ada"))
        bob = uow.users.create(UserIn(email="bob@example.com", name="Bob", age=None))
        cy = uow.users.create(UserIn(email="cy@example.com", name="Cy", age=7))
        assert isinstance(ada.id, int)
    # Ada's unset age takes the column default (NULL), not the pydantic default 99.
    assert stored(db) == {
        "ada@example.com": ("Ada", None),
        "bob@example.com": ("Bob", None),
        "cy@example.com": ("Cy", 7),
    }
    assert (ada.age, bob.age, cy.age) == (None, None, 7)


def test_create_attrs_override_data(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        uow.users.create({"email": "ada@example.com", "name": "Data"}, name="Attr")
        uow.users.create(UserIn(email="bob@example.com", name="Bob", age=1), age=2)
    assert stored(db) == {"ada@example.com": ("Attr", None), "bob@example.com": ("Bob", 2)}


def test_update_with_a_pydantic_model_changes_only_the_fields_that_were_set(
    db: Database, uow: AppUnitOfWork
) -> None:
    [ada] = seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        user = uow.users.get(ada.id)
        assert user is not None
        returned = uow.users.update(user, UserPatch(age=37))
        assert returned is user
    assert stored(db) == {"ada@example.com": ("Ada", 37)}
    with uow:
        user = uow.users.one(id=ada.id)
        uow.users.update(user, UserPatch(name="Ada L.", age=None))
    assert stored(db) == {"ada@example.com": ("Ada L.", None)}


def test_update_with_attrs_flushes_the_change(db: Database, uow: AppUnitOfWork) -> None:
    [ada] = seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        user = uow.users.one(id=ada.id)
        uow.users.update(user, name="Augusta", age=40)
        with count_statements(db.engine) as log:
            assert uow.users.count(name="Augusta", age=40) == 1
        assert not log.matching("UPDATE")  # update() flushed already
    assert stored(db) == {"ada@example.com": ("Augusta", 40)}


def test_delete_removes_the_row(db: Database, uow: AppUnitOfWork) -> None:
    ada, _bob = seed(uow, ("ada@example.com", "Ada", 36), ("bob@example.com", "Bob", 20))
    with uow:
        uow.users.delete(uow.users.one(id=ada.id))
        assert uow.users.get(ada.id) is None
        assert uow.users.count() == 1
    assert stored(db) == {"bob@example.com": ("Bob", 20)}


# -- FieldError --------------------------------------------------------------------------------

BAD_CALLS: dict[str, Callable[[AppUnitOfWork, User], object]] = {
    "filter": lambda u, _: u.users.filter(nmae="Ada"),
    "exclude": lambda u, _: u.users.exclude(nmae="Ada"),
    "first": lambda u, _: u.users.first(nmae="Ada"),
    "create": lambda u, _: u.users.create(email="x@example.com", name="X", nmae="X"),
    "create data": lambda u, _: u.users.create({"email": "x@example.com", "nmae": "X"}),
    "create pydantic": lambda u, _: u.users.create(
        UserWithPassword(email="x@example.com", password="secret")
    ),
    "update": lambda u, user: u.users.update(user, nmae="X"),
    "update pydantic": lambda u, user: u.users.update(
        user, UserWithPassword(email="x@example.com", password="secret")
    ),
    "first_or_create": lambda u, _: u.users.first_or_create(email="x@example.com", nmae="X"),
    "first_or_create defaults": lambda u, _: u.users.first_or_create(
        email="x@example.com", defaults={"nmae": "X"}
    ),
    "create_or_first defaults": lambda u, _: u.users.create_or_first(
        email="x@example.com", defaults={"nmae": "X"}
    ),
    "get_or_create": lambda u, _: u.users.get_or_create(nmae__iexact="X"),
}


@pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_unknown_field_raises_field_error_before_sql_and_the_transaction_stays_usable(
    db: Database, uow: AppUnitOfWork, call: Callable[[AppUnitOfWork, User], object]
) -> None:
    [ada] = seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        user = uow.users.one(id=ada.id)
        uow.users.create(email="before@example.com", name="Before")
        with count_statements(db.engine) as log, pytest.raises(FieldError) as info:
            call(uow, user)
        assert log.statements == []
        uow.users.create(email="after@example.com", name="After")
    message = str(info.value)
    assert "nmae" in message or "password" in message
    assert "valid fields" in message
    assert "email" in message
    assert isinstance(info.value, ValueError)
    assert stored(db) == {"ada@example.com": ("Ada", 36), **BEFORE_AND_AFTER}


# -- the Session seed helpers ------------------------------------------------------------------


def test_session_seed_helpers_in_a_unit_of_work(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        assert uow.session is db.s()
        ada = db.s.first_or_create(User, email="ada@example.com", defaults={"name": "Ada"})
        same = db.s.first_or_create(User, email="ada@example.com", defaults={"name": "X"})
        bob = db.s.create(User, {"email": "bob@example.com", "name": "B"}, name="Bob")
        existing = db.s.create_or_first(User, email="bob@example.com", defaults={"name": "X"})
        assert same is ada
        assert existing is bob
        assert db.s.first(User, name="Bob") is bob
        assert db.s.first(User, name="Nobody") is None
        assert [u.email for u in db.s.all(User, name="Ada")] == ["ada@example.com"]
        assert len(db.s.all(User)) == 2
        with pytest.raises(FieldError, match="nmae"):
            db.s.first_or_create(User, email="x@example.com", nmae="X")
    assert stored(db) == {"ada@example.com": ("Ada", None), "bob@example.com": ("Bob", None)}


@pytest.mark.sync_only(reason="checks the sync Session class")
def test_session_seed_helpers_on_a_plain_session(db: Database) -> None:
    with db.Session() as s, s.begin():
        assert isinstance(s, Session)
        ada = s.first_or_create(User, email="ada@example.com", defaults={"name": "Ada"})
        assert s.first_or_create(User, email="ada@example.com") is ada
        bob = s.create(User, UserIn(email="bob@example.com", name="Bob"))
        assert s.create_or_first(User, email="bob@example.com", defaults={"name": "X"}) is bob
        assert s.first(User, email="bob@example.com") is bob
        assert [u.email for u in s.all(User, name="Ada")] == ["ada@example.com"]
        assert s.get(User, ada.id) is ada
        for bad in (
            lambda: s.first(User, nmae="X"),
            lambda: s.all(User, nmae="X"),
            lambda: s.create(User, email="x@example.com", nmae="X"),
            lambda: s.create_or_first(User, email="x@example.com", defaults={"nmae": "X"}),
        ):
            with count_statements(db.engine) as log, pytest.raises(FieldError, match="nmae"):
                bad()
            assert log.statements == []
        s.create(User, email="after@example.com", name="After")
    assert stored(db) == {
        "ada@example.com": ("Ada", None),
        "bob@example.com": ("Bob", None),
        "after@example.com": ("After", None),
    }


def test_session_get_is_sqlalchemys_own(db: Database, uow: AppUnitOfWork) -> None:
    assert Session.get is sqlalchemy.orm.Session.get
    [ada] = seed(uow, ("ada@example.com", "Ada", 36))
    with uow:
        user = db.s.get(User, ada.id)
        assert user is not None
        assert user is uow.users.get(ada.id)
        assert db.s.get(User, ada.id + 1000) is None


# -- construction ------------------------------------------------------------------------------


@pytest.mark.sync_only(reason="subclasses the sync Repository")
def test_repository_without_a_model_raises_type_error_saying_how_to_fix_it(db: Database) -> None:
    class Modelless(Repository):  # type: ignore[type-arg]
        pass

    with db.Session() as session:
        for make in (lambda: Repository(session), lambda: Modelless(session)):
            with pytest.raises(TypeError) as info:
                make()
            message = str(info.value)
            assert "Repository[Model]" in message
            assert "Repository(session, User)" in message
        assert Modelless(session, User).model is User


def test_repository_of_an_unmapped_class_raises_type_error(db: Database) -> None:
    with db.Session() as session, pytest.raises(TypeError, match="NotMapped"):
        Repository(session, NotMapped)


@pytest.mark.sync_only(reason="subclasses the sync Repository")
def test_repository_subclass_knows_its_model_from_the_type_parameter(
    db: Database, uow: AppUnitOfWork
) -> None:
    class PostRepository(Repository[Post]):
        pass

    with db.Session() as session:
        assert UserRepository(session).model is User
        assert PostRepository(session).model is Post
        assert Repository(session, Membership).model is Membership
    with uow:
        assert isinstance(uow.users, UserRepository)
        assert uow.users.model is User
        assert uow.posts.model is Post


def test_user_repository_adults_filters_and_orders(uow: AppUnitOfWork) -> None:
    seed(
        uow,
        ("kid@example.com", "Kid", 17),
        ("b18@example.com", "B", 18),
        ("a18@example.com", "A", 18),
        ("old@example.com", "Old", 70),
        ("unknown@example.com", "Unknown", None),
    )
    with uow:
        adults = uow.users.adults()
    assert [u.email for u in adults] == ["old@example.com", "a18@example.com", "b18@example.com"]


# -- after the block ---------------------------------------------------------------------------


def test_objects_keep_their_column_attributes_after_the_unit_of_work(uow: AppUnitOfWork) -> None:
    with uow:
        created = uow.users.create(email="ada@example.com", name="Ada")
    with uow:
        loaded = uow.users.one(email="ada@example.com")
        listed = uow.users.all()
    # Detached now; reading columns must not need the (closed) session.
    assert (created.id, created.email, created.name, created.age) == (
        loaded.id,
        "ada@example.com",
        "Ada",
        None,
    )
    assert (loaded.email, loaded.name) == ("ada@example.com", "Ada")
    assert [u.email for u in listed] == ["ada@example.com"]
    assert sqlalchemy.inspect(loaded).detached
