"""Query[Model] on SQLite and PostgreSQL (the `db` fixture is parametrized by backend):
laziness, immutability, slicing, bulk update/delete, pagination and the Page schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert, inspect, select

from repositories import DoesNotExist, FieldError, MultipleObjectsReturned, Page, Query
from tests.integration.helpers import stored
from tests.models import AppUnitOfWork, Post, User
from uow import Database
from uow.testing import count_statements

pytestmark = [pytest.mark.both_faces, pytest.mark.through_pgbouncer]


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    age: int | None


def seed(uow: AppUnitOfWork, count: int) -> list[int]:
    """Commit `count` users (user001@..., age i % 5, name Even/Odd); their ids in key order."""
    rows = [
        {"email": f"user{i:03d}@example.com", "name": "Even" if i % 2 == 0 else "Odd", "age": i % 5}
        for i in range(1, count + 1)
    ]
    with uow:
        if rows:
            uow.session.execute(insert(User), rows)
        return list(uow.session.scalars(select(User.id).order_by(User.id)))


def ids(users: list[User]) -> list[int]:
    return [user.id for user in users]


# -- laziness and immutability -----------------------------------------------------------------


@pytest.mark.sync_only(reason="checks the sync Query class")
def test_building_a_query_runs_no_sql_until_a_terminal_method(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, 30)
    with uow:
        uow.users.count()  # the block's connection is open before counting
        with count_statements(db.engine) as building:
            query = (
                uow.users.filter(age__gte=1)
                .exclude(name="Even")
                .filter(email__contains="user")
                .order_by("-age", "email")[2:8][1:4]
            )
            repr(query)
            iter(uow.users.iterator(chunk_size=10))
        assert building.statements == []
        with count_statements(db.engine) as running:
            rows = query.all()
    assert isinstance(query, Query)
    assert len(running.statements) == 1
    assert len(rows) == 3


def test_every_chaining_call_returns_a_new_query_and_leaves_the_original_unchanged(
    uow: AppUnitOfWork,
) -> None:
    seed(uow, 20)
    with uow:
        base = uow.users.filter(age__gte=2)
        sql_before = str(base.statement())
        everyone_before = ids(base.all())
        derived = [
            base.filter(name="Even"),
            base.exclude(name="Even"),
            base.order_by("-age"),
            base[1:3],
            base.filter(),
        ]
        for query in derived:
            assert query is not base
            query.all()
        assert str(base.statement()) == sql_before
        assert ids(base.all()) == everyone_before
        assert base.count() == 12  # ages 2, 3, 4 out of 0..4, four each
        assert derived[0].count() + derived[1].count() == 12
        assert derived[3].count() == 2


# -- ordering ----------------------------------------------------------------------------------


def test_order_by_descending_then_ascending_breaks_ties(uow: AppUnitOfWork) -> None:
    with uow:
        for email, age in [("c@x.org", 30), ("a@x.org", 30), ("b@x.org", 50), ("d@x.org", 10)]:
            uow.users.create(email=email, name="N", age=age)
    with uow:
        ordered = uow.users.query().order_by("-age", "email").all()
        by_email_only = uow.users.query().order_by("-age").order_by("email").all()
        ascending = uow.users.filter(age__lt=50).order_by("age", "-email").all()
    assert [u.email for u in ordered] == ["b@x.org", "a@x.org", "c@x.org", "d@x.org"]
    assert [u.email for u in by_email_only] == ["a@x.org", "b@x.org", "c@x.org", "d@x.org"]
    assert [u.email for u in ascending] == ["d@x.org", "c@x.org", "a@x.org"]


@pytest.mark.parametrize("field", ["nmae", "-nmae", "posts", "age__gte"])
def test_order_by_an_unknown_field_or_a_relationship_raises_field_error_before_sql(
    db: Database, uow: AppUnitOfWork, field: str
) -> None:
    with uow, count_statements(db.engine) as log:
        query = uow.users.filter(age__gte=1)
        with pytest.raises(FieldError):
            query.order_by("email", field)
    assert log.statements == []


# -- slicing -----------------------------------------------------------------------------------


def test_slicing_is_limit_and_offset_in_one_statement(db: Database, uow: AppUnitOfWork) -> None:
    every = seed(uow, 30)
    with uow, count_statements(db.engine) as log:
        page = uow.users.query().order_by("id")[10:20].all()
    assert ids(page) == every[10:20]
    [statement] = log.statements
    assert "LIMIT" in statement.upper()
    assert "OFFSET" in statement.upper()


SLICES = [
    ((10, 20), (2, 5)),
    ((10, 20), (5, None)),
    ((10, 20), (8, 15)),
    ((10, 20), (15, None)),
    ((10, 20), (None, 3)),
    ((5, None), (None, 3)),
    ((5, None), (20, None)),
    ((None, 12), (3, 30)),
    ((3, 25), (0, 0)),
    ((7, 4), (None, None)),
]


@pytest.mark.parametrize(("outer", "inner"), SLICES, ids=[f"{o}{i}" for o, i in SLICES])
def test_nested_slices_compose_like_list_slices(
    uow: AppUnitOfWork, outer: tuple[int | None, int | None], inner: tuple[int | None, int | None]
) -> None:
    every = seed(uow, 30)
    with uow:
        query = uow.users.query().order_by("id")
        sliced = query[outer[0] : outer[1]][inner[0] : inner[1]]
        expected = every[outer[0] : outer[1]][inner[0] : inner[1]]
        assert ids(sliced.all()) == expected
        assert sliced.count() == len(expected)
        assert sliced.exists() is bool(expected)


def test_indexing_returns_one_object_with_one_select_or_raises_index_error(
    db: Database, uow: AppUnitOfWork
) -> None:
    every = seed(uow, 30)
    with uow:
        query = uow.users.query().order_by("id")
        with count_statements(db.engine) as log:
            third = query[2]
        assert isinstance(third, User)
        assert third.id == every[2]
        assert len(log.statements) == 1
        assert query[10:20][3].id == every[13]
        assert query[29].id == every[29]
        with pytest.raises(IndexError):
            query[30]
        with pytest.raises(IndexError):
            query[10:20][10]  # row 21 exists, but not inside the slice
        with pytest.raises(IndexError):
            uow.users.filter(name="Nobody")[0]


@pytest.mark.parametrize(
    "key",
    [-1, slice(-3, None), slice(None, -1), slice(None, None, 2), slice(1, 5, -1)],
    ids=["index -1", "[-3:]", "[:-1]", "[::2]", "[1:5:-1]"],
)
def test_negative_indexes_and_steps_raise_value_error_before_sql(
    db: Database, uow: AppUnitOfWork, key: Any
) -> None:
    seed(uow, 5)
    with uow, count_statements(db.engine) as log:
        with pytest.raises(ValueError, match=r"negative|step"):
            uow.users.query().order_by("id")[key]
    assert log.statements == []


# -- reading -----------------------------------------------------------------------------------


def test_all_first_one_and_iteration(db: Database, uow: AppUnitOfWork) -> None:
    every = seed(uow, 10)
    with uow:
        odd = uow.users.filter(name="Odd")
        assert sorted(ids(odd.all())) == every[0::2]
        first = odd.first()
        assert first is not None
        assert first.email == "user001@example.com"
        last = odd.order_by("-id").first()
        assert last is not None
        assert last.email == "user009@example.com"
        assert uow.users.filter(name="Nobody").first() is None
        assert odd.filter(email="user003@example.com").one().age == 3
        assert odd.order_by("id")[2:3].one().email == "user005@example.com"
        with pytest.raises(DoesNotExist):
            odd.filter(email="user002@example.com").one()
        with pytest.raises(MultipleObjectsReturned):
            odd.one()
        with count_statements(db.engine) as log:
            iterated = [user.email for user in odd.order_by("email")]
            listed = list(odd.order_by("-email"))
    assert iterated == [f"user{i:03d}@example.com" for i in (1, 3, 5, 7, 9)]
    assert [u.email for u in listed] == iterated[::-1]
    assert len(log.statements) == 2


def test_count_respects_the_slice(db: Database, uow: AppUnitOfWork) -> None:
    seed(uow, 30)
    with uow:
        query = uow.users.query().order_by("-age")
        assert query.count() == 30
        assert query[10:20].count() == 10
        assert query[25:40].count() == 5
        assert query[40:].count() == 0
        assert query[:7].count() == 7
        assert uow.users.filter(name="Odd")[10:].count() == 5
        with count_statements(db.engine) as log:
            assert query[:0].count() == 0
            assert uow.users.filter(id__in=[]).count() == 0
        assert log.statements == []


def test_exists_is_one_select_exists_statement(db: Database, uow: AppUnitOfWork) -> None:
    seed(uow, 30)
    with uow:
        uow.users.count()
        queries = {
            "hit": (uow.users.filter(age=4), True),
            "miss": (uow.users.filter(age=99), False),
            "sliced hit": (uow.users.query()[29:], True),
            "sliced past the end": (uow.users.query()[30:], False),
        }
        for name, (query, expected) in queries.items():
            with count_statements(db.engine) as log:
                assert query.exists() is expected, name
            [statement] = log.statements
            assert statement.lstrip().upper().startswith("SELECT")
            assert "EXISTS" in statement.upper()


# -- update and delete -------------------------------------------------------------------------


def test_update_is_one_statement_returns_the_row_count_and_updates_loaded_objects(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, 10)
    with uow:
        loaded = {u.email: u for u in uow.users.all()}
        with count_statements(db.engine) as log:
            changed = uow.users.filter(age__lt=2).exclude(name="Odd").update(name="Young")
        assert changed == 2  # ages 0 and 1 are users 5, 6, 10 and 1; the even ones: 6, 10
        assert log.statements[0].lstrip().upper().startswith("UPDATE")
        assert len(log.statements) == 1
        assert loaded["user006@example.com"].name == "Young"
        assert loaded["user010@example.com"].name == "Young"
        assert loaded["user005@example.com"].name == "Odd"
        assert uow.users.filter(name="Nobody").update(name="X") == 0
    assert {email for email, (name, _) in stored(db).items() if name == "Young"} == {
        "user006@example.com",
        "user010@example.com",
    }


def test_update_through_a_relationship_lookup(db: Database, uow: AppUnitOfWork) -> None:
    with uow:
        ada = uow.users.create(email="ada@example.com", name="Ada")
        bob = uow.users.create(email="bob@example.com", name="Bob")
        for author, title in [(ada, "a1"), (ada, "a2"), (bob, "b1")]:
            uow.posts.create(title=title, author_id=author.id)
    with uow:
        with count_statements(db.engine) as log:
            changed = uow.posts.filter(author__email="ada@example.com").update(title="by Ada")
        assert changed == 2
        assert len(log.statements) == 1
    with db.Session() as session:
        assert sorted(session.scalars(select(Post.title))) == ["b1", "by Ada", "by Ada"]


def test_delete_is_one_statement_and_deleted_objects_leave_the_session(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, 10)
    with uow:
        loaded = {u.email: u for u in uow.users.all()}
        with count_statements(db.engine) as log:
            deleted = uow.users.filter(age=0).delete()
        assert deleted == 2  # users 5 and 10
        assert len(log.statements) == 1
        assert log.statements[0].lstrip().upper().startswith("DELETE")
        gone = loaded["user005@example.com"]
        kept = loaded["user001@example.com"]
        assert gone not in uow.session
        assert inspect(gone).deleted or inspect(gone).detached
        assert kept in uow.session
        assert uow.users.get(gone.id) is None
        assert uow.users.filter(name="Nobody").delete() == 0
        assert uow.users.count() == 8
    assert set(stored(db)) == {f"user{i:03d}@example.com" for i in (1, 2, 3, 4, 6, 7, 8, 9)}


def test_update_and_delete_of_a_query_that_matches_nothing_run_no_sql(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, 3)
    with uow, count_statements(db.engine) as log:
        assert uow.users.filter(id__in=[]).update(name="X") == 0
        assert uow.users.filter(id__in=[]).delete() == 0
    assert log.statements == []
    assert len(stored(db)) == 3


@pytest.mark.parametrize("values", [{"nmae": "X"}, {"age__gte": 3}, {"name": "X", "agee": 1}])
def test_update_with_an_unknown_field_raises_field_error_before_sql(
    db: Database, uow: AppUnitOfWork, values: dict[str, Any]
) -> None:
    seed(uow, 3)
    with uow:
        with count_statements(db.engine) as log, pytest.raises(FieldError):
            uow.users.filter(age__gte=1).update(**values)
        assert log.statements == []
        uow.users.create(email="after@example.com", name="After")
    assert len(stored(db)) == 4


SLICED_CALLS: dict[str, Callable[[Query[User]], object]] = {
    "update": lambda q: q.update(name="X"),
    "delete": lambda q: q.delete(),
    "filter": lambda q: q.filter(name="X"),
    "exclude": lambda q: q.exclude(name="X"),
    "paginate": lambda q: q.paginate(1, 2),
}


@pytest.mark.parametrize("call", list(SLICED_CALLS.values()), ids=list(SLICED_CALLS))
def test_writing_or_filtering_a_sliced_query_raises_type_error_before_sql(
    db: Database, uow: AppUnitOfWork, call: Callable[[Query[User]], object]
) -> None:
    seed(uow, 5)
    with uow:
        for sliced in (uow.users.query()[1:3], uow.users.query()[:2], uow.users.query()[2:]):
            with count_statements(db.engine) as log, pytest.raises(TypeError):
                call(sliced)
            assert log.statements == []
    assert len(stored(db)) == 5
    assert {name for name, _ in stored(db).values()} == {"Even", "Odd"}


# -- repository methods share the Query implementation -----------------------------------------

SHARED: dict[str, tuple[Callable[[AppUnitOfWork], object], Callable[[AppUnitOfWork], object]]] = {
    "all": (lambda u: u.users.all(age__gte=2), lambda u: u.users.filter(age__gte=2).all()),
    "first": (lambda u: u.users.first(age__gte=2), lambda u: u.users.filter(age__gte=2).first()),
    "one": (lambda u: u.users.one(email="user004@example.com"),
            lambda u: u.users.filter(email="user004@example.com").one()),
    "count": (lambda u: u.users.count(age__gte=2), lambda u: u.users.filter(age__gte=2).count()),
    "exists": (lambda u: u.users.exists(age=4), lambda u: u.users.filter(age=4).exists()),
    "exclude": (lambda u: u.users.exclude(age=2).all(),
                lambda u: u.users.query().exclude(age=2).all()),
    "paginate": (lambda u: u.users.paginate(2, 3, age__gte=2).items,
                 lambda u: u.users.filter(age__gte=2).paginate(2, 3).items),
    "iterator": (lambda u: list(u.users.iterator(4, age__gte=2)),
                 lambda u: list(u.users.filter(age__gte=2).iterator(4))),
}  # fmt: skip


@pytest.mark.parametrize(("via_repository", "via_query"), SHARED.values(), ids=list(SHARED))
def test_repository_lookup_methods_run_the_same_sql_as_the_query(
    db: Database,
    uow: AppUnitOfWork,
    via_repository: Callable[[AppUnitOfWork], object],
    via_query: Callable[[AppUnitOfWork], object],
) -> None:
    seed(uow, 12)
    with uow:
        uow.users.count()
        with count_statements(db.engine) as repository_log:
            from_repository = via_repository(uow)
        with count_statements(db.engine) as query_log:
            from_query = via_query(uow)
    assert repository_log.statements
    assert repository_log.statements == query_log.statements
    assert from_repository == from_query


BAD_LOOKUPS: dict[str, Callable[[AppUnitOfWork], object]] = {
    "all": lambda u: u.users.all(nmae="X"),
    "one": lambda u: u.users.one(nmae="X"),
    "count": lambda u: u.users.count(age__gtee=1),
    "exists": lambda u: u.users.exists(nmae="X"),
    "paginate": lambda u: u.users.paginate(1, 10, nmae="X"),
    "iterator": lambda u: u.users.iterator(10, nmae="X"),
    "query filter": lambda u: u.users.query().filter(posts__titel="X"),
}


@pytest.mark.parametrize("call", list(BAD_LOOKUPS.values()), ids=list(BAD_LOOKUPS))
def test_repository_lookup_methods_raise_field_error_before_sql(
    db: Database, uow: AppUnitOfWork, call: Callable[[AppUnitOfWork], object]
) -> None:
    with uow, count_statements(db.engine) as log, pytest.raises(FieldError):
        call(uow)
    assert log.statements == []


# -- paginate ----------------------------------------------------------------------------------


def test_paginate_walks_the_pages_in_primary_key_order(uow: AppUnitOfWork) -> None:
    every = seed(uow, 25)
    with uow:
        pages = [uow.users.paginate(n, 10) for n in (1, 2, 3)]
    assert [ids(p.items) for p in pages] == [every[0:10], every[10:20], every[20:25]]
    assert [(p.page, p.per_page, p.total, p.pages) for p in pages] == [
        (1, 10, 25, 3),
        (2, 10, 25, 3),
        (3, 10, 25, 3),
    ]
    assert [(p.has_prev, p.has_next) for p in pages] == [(False, True), (True, True), (True, False)]


def test_paginate_follows_the_filter_and_the_ordering_of_the_query(uow: AppUnitOfWork) -> None:
    seed(uow, 20)
    with uow:
        query = uow.users.exclude(name="Odd").order_by("-age", "email")
        expected = [u.email for u in query.all()]
        page = query.paginate(2, 4)
    assert [u.email for u in page.items] == expected[4:8]
    assert (page.total, page.pages, page.has_next) == (10, 3, True)


def test_a_page_past_the_end_is_empty(uow: AppUnitOfWork) -> None:
    seed(uow, 25)
    with uow:
        page = uow.users.paginate(7, 10)
    assert page.items == []
    assert (page.page, page.total, page.pages, page.has_next, page.has_prev) == (
        7,
        25,
        3,
        False,
        True,
    )


def test_an_empty_table_has_one_empty_page(uow: AppUnitOfWork) -> None:
    with uow:
        page = uow.users.paginate(1, 10)
    assert page.items == []
    assert (page.total, page.pages, page.has_next, page.has_prev) == (0, 1, False, False)


def test_an_exact_multiple_of_per_page_has_no_extra_page(uow: AppUnitOfWork) -> None:
    every = seed(uow, 20)
    with uow:
        second = uow.users.paginate(2, 10)
        third = uow.users.paginate(3, 10)
    assert ids(second.items) == every[10:20]
    assert (second.total, second.pages, second.has_next) == (20, 2, False)
    assert third.items == []
    assert third.has_next is False


@pytest.mark.parametrize(("page", "per_page"), [(0, 10), (-1, 10), (1, 0), (1, -5), (0, 0)])
def test_paginate_rejects_page_or_per_page_below_one_before_sql(
    db: Database, uow: AppUnitOfWork, page: int, per_page: int
) -> None:
    seed(uow, 3)
    with uow, count_statements(db.engine) as log:
        with pytest.raises(ValueError, match="page"):
            uow.users.paginate(page, per_page)
        with pytest.raises(ValueError, match="page"):
            uow.users.filter(age__gte=0).paginate(page, per_page)
    assert log.statements == []


def test_a_page_or_slice_beyond_the_largest_sql_offset_raises_value_error_before_sql(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, 3)
    with uow:
        uow.users.count()
        with count_statements(db.engine) as log:
            with pytest.raises(ValueError, match="too large"):
                uow.users.paginate(10**19, 10)
            with pytest.raises(ValueError, match="too large"):
                uow.users.paginate(2**63 // 10 + 2, 10)
            for key in (slice(2**63, None), slice(None, 2**63), 2**63):
                with pytest.raises(ValueError, match="within"):
                    uow.users.query()[key]
            with pytest.raises(ValueError, match="within"):
                uow.users.query()[2**62 :][2**62 :]
        assert log.statements == []
        far = uow.users.paginate(2**63 // 10 - 1, 10)  # the last page SQL can address
        assert (far.items, far.total, far.has_next) == ([], 3, False)
        assert uow.users.query()[2**63 - 2 :].all() == []


def test_per_page_is_capped_at_max_per_page(uow: AppUnitOfWork) -> None:
    every = seed(uow, 150)
    with uow:
        default_cap = uow.users.paginate(1, 500)
        second = uow.users.paginate(2, 500)
        custom_cap = uow.users.paginate(2, 50, max_per_page=7)
        under_cap = uow.users.filter(age__gte=0).paginate(1, 30, max_per_page=40)
    assert len(default_cap.items) == 100
    assert (default_cap.per_page, default_cap.pages, default_cap.has_next) == (100, 2, True)
    assert ids(second.items) == every[100:150]
    assert len(custom_cap.items) == 7
    assert ids(custom_cap.items) == every[7:14]
    assert (custom_cap.per_page, custom_cap.pages) == (7, 22)
    assert (len(under_cap.items), under_cap.per_page) == (30, 30)


def test_count_false_skips_the_count_query_and_has_next_stays_exact(
    db: Database, uow: AppUnitOfWork
) -> None:
    every = seed(uow, 20)
    with uow:
        uow.users.count()
        results = {}
        for page in (1, 2, 3):
            with count_statements(db.engine) as counted:
                with_count = uow.users.paginate(page, 10)
            with count_statements(db.engine) as uncounted:
                without = uow.users.paginate(page, 10, count=False)
            results[page] = (with_count, without)
            assert len(uncounted.statements) == len(counted.statements) - 1
            assert not any("count(" in s.lower() for s in uncounted.statements)
            assert ids(without.items) == ids(with_count.items)
            assert without.has_next is with_count.has_next
            assert (without.total, without.pages) == (None, None)
    assert ids(results[1][1].items) == every[:10]
    assert [results[n][1].has_next for n in (1, 2, 3)] == [True, False, False]
    assert [results[n][1].has_prev for n in (1, 2, 3)] == [False, True, True]


# -- Page schemas ------------------------------------------------------------------------------


def test_map_to_a_schema_gives_a_page_of_that_schema_with_the_same_metadata(
    db: Database, uow: AppUnitOfWork
) -> None:
    every = seed(uow, 25)
    with uow:
        page = uow.users.paginate(2, 10)
    with count_statements(db.engine) as log:
        mapped = page.map(UserOut)  # after the block: detached objects, no SQL
    assert log.statements == []
    assert type(mapped) is Page[UserOut]
    assert isinstance(mapped, BaseModel)
    assert all(type(item) is UserOut for item in mapped.items)
    assert [item.id for item in mapped.items] == every[10:20]
    assert mapped.items[0] == UserOut(id=every[10], email="user011@example.com", age=1)
    assert (mapped.page, mapped.per_page, mapped.total, mapped.pages) == (2, 10, 25, 3)
    assert (mapped.has_next, mapped.has_prev) == (True, True)
    dumped = mapped.model_dump()
    assert dumped["pages"] == 3
    assert dumped["has_prev"] is True
    assert dumped["items"][0] == {"id": every[10], "email": "user011@example.com", "age": 1}
    assert set(dumped) == {"items", "page", "per_page", "total", "has_next", "pages", "has_prev"}


def test_map_with_a_plain_function(uow: AppUnitOfWork) -> None:
    seed(uow, 5)
    with uow:
        page = uow.users.paginate(1, 2, count=False)
    mapped = page.map(lambda user: {"email": user.email.upper()})
    assert mapped.items == [{"email": "USER001@EXAMPLE.COM"}, {"email": "USER002@EXAMPLE.COM"}]
    assert (mapped.page, mapped.per_page, mapped.has_next) == (1, 2, True)
    assert (mapped.total, mapped.pages) == (None, None)
    assert json.loads(mapped.model_dump_json())["items"][1] == {"email": "USER002@EXAMPLE.COM"}


def test_a_page_of_schemas_serialises_to_json_and_back(uow: AppUnitOfWork) -> None:
    every = seed(uow, 3)
    with uow:
        page = uow.users.paginate(2, 2).map(UserOut)
    data = json.loads(page.model_dump_json())
    assert data == {
        "items": [{"id": every[2], "email": "user003@example.com", "age": 3}],
        "page": 2,
        "per_page": 2,
        "total": 3,
        "has_next": False,
        "pages": 2,
        "has_prev": True,
    }
    again = Page[UserOut].model_validate_json(page.model_dump_json())
    assert again == page
    schema = Page[UserOut].model_json_schema(mode="serialization")
    assert {"items", "pages", "has_prev", "total"} <= set(schema["properties"])
