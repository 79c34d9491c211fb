"""Django-style lookups on real databases: every operator, escaping, case, traversal, validation.

Every test runs on SQLite and on PostgreSQL (the `db` fixture is parametrized by backend) and
asserts the exact set of rows that match. Invalid lookups must fail before any SQL, with the
transaction still usable afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from sqlalchemy import BigInteger, Integer, or_, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import DoesNotExist, FieldError, Repository
from repositories._dialects import parameter_limit
from tests.models import AppUnitOfWork, Post, User
from uow import Database
from uow.testing import count_statements

pytestmark = pytest.mark.both_faces

# (email, name, age): names mix case so case-sensitive and insensitive operators differ.
PEOPLE: list[tuple[str, str, int | None]] = [
    ("ann@example.com", "Ann", 30),
    ("anna@example.com", "ANNA", 17),
    ("bob@example.org", "Bob", 45),
    ("joanne@test.net", "Joanne", None),
    ("zed@example.org", "zed", 18),
]
EVERYONE = frozenset(email for email, _, _ in PEOPLE)


def emails(users: Iterable[User]) -> set[str]:
    return {user.email for user in users}


def seed_people(uow: AppUnitOfWork, people: Iterable[tuple[str, str, int | None]] = PEOPLE) -> None:
    with uow:
        for email, name, age in people:
            uow.users.create(email=email, name=name, age=age)


def stored_emails(db: Database) -> set[str]:
    with db.Session() as session:
        return set(session.scalars(select(User.email)))


# -- every operator ----------------------------------------------------------------------------

OPERATOR_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"name": "Ann"}, {"ann@example.com"}),
    ({"name": "ann"}, set()),
    ({"name__exact": "Bob"}, {"bob@example.org"}),
    ({"age": None}, {"joanne@test.net"}),
    ({"age__exact": None}, {"joanne@test.net"}),
    ({"age": 18}, {"zed@example.org"}),
    ({"name__iexact": "ann"}, {"ann@example.com"}),
    ({"name__iexact": "ZED"}, {"zed@example.org"}),
    ({"name__iexact": "an"}, set()),
    ({"name__contains": "nn"}, {"ann@example.com", "joanne@test.net"}),
    ({"name__contains": "NN"}, {"anna@example.com"}),
    ({"name__contains": ""}, set(EVERYONE)),
    ({"name__icontains": "nn"}, {"ann@example.com", "anna@example.com", "joanne@test.net"}),
    ({"email__icontains": "EXAMPLE.ORG"}, {"bob@example.org", "zed@example.org"}),
    ({"name__startswith": "A"}, {"ann@example.com", "anna@example.com"}),
    ({"name__startswith": "An"}, {"ann@example.com"}),
    ({"name__startswith": "a"}, set()),
    ({"name__startswith": "Annx"}, set()),
    ({"name__startswith": ""}, set(EVERYONE)),
    ({"name__istartswith": "an"}, {"ann@example.com", "anna@example.com"}),
    ({"name__istartswith": "Z"}, {"zed@example.org"}),
    ({"name__endswith": "nne"}, {"joanne@test.net"}),
    ({"name__endswith": "NA"}, {"anna@example.com"}),
    ({"name__endswith": "na"}, set()),
    ({"name__endswith": "Ann"}, {"ann@example.com"}),
    ({"name__endswith": "xAnn"}, set()),
    ({"name__endswith": ""}, set(EVERYONE)),
    ({"email__endswith": ".ORG"}, set()),
    ({"name__iendswith": "NN"}, {"ann@example.com"}),
    ({"email__iendswith": ".ORG"}, {"bob@example.org", "zed@example.org"}),
    ({"age__in": [17, 45, 99]}, {"anna@example.com", "bob@example.org"}),
    ({"name__in": ("Ann", "zed")}, {"ann@example.com", "zed@example.org"}),
    ({"name__in": {"Bob"}}, {"bob@example.org"}),
    ({"age__in": range(17, 19)}, {"anna@example.com", "zed@example.org"}),
    ({"age__in": [None, 30]}, {"ann@example.com"}),
    ({"age__gt": 18}, {"ann@example.com", "bob@example.org"}),
    ({"age__gte": 18}, {"ann@example.com", "bob@example.org", "zed@example.org"}),
    ({"age__lt": 18}, {"anna@example.com"}),
    ({"age__lte": 18}, {"anna@example.com", "zed@example.org"}),
    ({"email__lt": "b"}, {"ann@example.com", "anna@example.com"}),
    ({"age__range": (17, 30)}, {"ann@example.com", "anna@example.com", "zed@example.org"}),
    ({"age__range": [18, 18]}, {"zed@example.org"}),
    ({"age__range": (31, 44)}, set()),
    ({"age__isnull": True}, {"joanne@test.net"}),
    ({"age__isnull": False}, set(EVERYONE) - {"joanne@test.net"}),
    ({"name__icontains": "an", "age__gte": 18}, {"ann@example.com"}),
    ({"name__startswith": "A", "age__lt": 20, "email__endswith": ".com"}, {"anna@example.com"}),
]


@pytest.mark.parametrize(
    ("lookups", "expected"), OPERATOR_CASES, ids=[repr(case) for case, _ in OPERATOR_CASES]
)
def test_operator_matches_exactly_and_exclude_keeps_the_rest(
    uow: AppUnitOfWork, lookups: dict[str, Any], expected: set[str]
) -> None:
    seed_people(uow)
    with uow:
        matched = uow.users.filter(**lookups).all()
        kept = uow.users.exclude(**lookups).all()
        assert uow.users.count(**lookups) == len(expected)
        assert uow.users.exists(**lookups) is bool(expected)
    assert emails(matched) == expected
    assert len(matched) == len(expected)
    # Django's exclude: NOT (all lookups together); rows with NULL columns are kept.
    assert emails(kept) == EVERYONE - expected


def test_exclude_keeps_rows_whose_column_is_null_for_every_comparison(uow: AppUnitOfWork) -> None:
    seed_people(uow)
    with uow:
        assert emails(uow.users.exclude(age__gt=0).all()) == {"joanne@test.net"}
        assert emails(uow.users.exclude(age__lt=100).all()) == {"joanne@test.net"}
        assert emails(uow.users.exclude(age__range=(0, 100)).all()) == {"joanne@test.net"}
        assert emails(uow.users.exclude(age__in=[17, 18, 30, 45]).all()) == {"joanne@test.net"}
        assert uow.users.exclude(age__isnull=True).count() == len(PEOPLE) - 1
        assert emails(uow.users.exclude(age__gte=18, name__icontains="n").all()) == {
            "anna@example.com",
            "joanne@test.net",
            "bob@example.org",
            "zed@example.org",
        }


# -- escaping and case -------------------------------------------------------------------------

LITERAL_NAMES = ["50%_off", "50xxoff", "a_b", "axb", "c/d", "c\\d", "cxd", "100%"]

ESCAPE_CASES: list[tuple[str, str, set[str]]] = [
    ("contains", "%_", {"50%_off"}),
    ("contains", "%", {"50%_off", "100%"}),
    ("contains", "_", {"50%_off", "a_b"}),
    ("contains", "/", {"c/d"}),
    ("contains", "\\", {"c\\d"}),
    ("icontains", "%_OFF", {"50%_off"}),
    ("icontains", "C/", {"c/d"}),
    ("icontains", "C\\", {"c\\d"}),
    ("startswith", "50%", {"50%_off"}),
    ("startswith", "a_", {"a_b"}),
    ("istartswith", "50%_", {"50%_off"}),
    ("istartswith", "A_", {"a_b"}),
    ("endswith", "_b", {"a_b"}),
    ("endswith", "0%", {"100%"}),
    ("endswith", "/d", {"c/d"}),
    ("iendswith", "_B", {"a_b"}),
    ("iendswith", "%_OFF", {"50%_off"}),
    ("iexact", "50%_OFF", {"50%_off"}),
    ("iexact", "A_B", {"a_b"}),
    ("exact", "a_b", {"a_b"}),
]


@pytest.mark.parametrize(("op", "value", "expected"), ESCAPE_CASES)
def test_like_wildcards_and_the_escape_character_match_literally(
    uow: AppUnitOfWork, op: str, value: str, expected: set[str]
) -> None:
    seed_people(uow, [(f"u{i}@example.com", name, None) for i, name in enumerate(LITERAL_NAMES)])
    with uow:
        found = uow.users.filter(**{f"name__{op}": value}).all()
    assert {user.name for user in found} == expected


CASE_NAMES = ["Hello", "HELLO", "hello", "hElLo world"]
CASE_CASES: list[tuple[str, str, set[str]]] = [
    ("exact", "hello", {"hello"}),
    ("iexact", "HeLLo", {"Hello", "HELLO", "hello"}),
    ("contains", "ell", {"Hello", "hello"}),
    ("contains", "ElL", {"hElLo world"}),
    ("icontains", "ELL", set(CASE_NAMES)),
    ("startswith", "H", {"Hello", "HELLO"}),
    ("startswith", "h", {"hello", "hElLo world"}),
    ("istartswith", "h", set(CASE_NAMES)),
    ("endswith", "LO", {"HELLO"}),
    ("endswith", "lo", {"Hello", "hello"}),
    ("iendswith", "LO", {"Hello", "HELLO", "hello"}),
    ("iendswith", "WORLD", {"hElLo world"}),
]


@pytest.mark.parametrize(("op", "value", "expected"), CASE_CASES)
def test_i_operators_ignore_case_and_the_others_respect_it_on_every_database(
    uow: AppUnitOfWork, op: str, value: str, expected: set[str]
) -> None:
    seed_people(uow, [(f"u{i}@example.com", name, None) for i, name in enumerate(CASE_NAMES)])
    with uow:
        found = uow.users.filter(**{f"name__{op}": value}).all()
    assert {user.name for user in found} == expected


UNICODE_NAMES = ["Émile", "émile", "ÉMILE", "Zoë"]
UNICODE_CASES: list[tuple[str, str, set[str]]] = [
    ("iexact", "émile", {"Émile", "émile", "ÉMILE"}),
    ("icontains", "ÉMI", {"Émile", "émile", "ÉMILE"}),
    ("icontains", "É", {"Émile", "émile", "ÉMILE"}),
    ("istartswith", "é", {"Émile", "émile", "ÉMILE"}),
    ("iendswith", "Ë", {"Zoë"}),
    ("contains", "É", {"Émile", "ÉMILE"}),
    ("startswith", "é", {"émile"}),
    ("endswith", "ë", {"Zoë"}),
]


@pytest.mark.parametrize(("op", "value", "expected"), UNICODE_CASES)
def test_case_behaviour_is_the_same_for_non_ascii_letters(
    db: Database, backend: str, uow: AppUnitOfWork, op: str, value: str, expected: set[str]
) -> None:
    if backend == "postgresql":
        with db.engine.connect() as connection:
            if connection.scalar(text("SELECT lower('ÉË') = 'éë'")) is not True:
                pytest.skip("this PostgreSQL server's locale has no Unicode lower()")
    seed_people(uow, [(f"u{i}@example.com", name, None) for i, name in enumerate(UNICODE_NAMES)])
    with uow:
        found = uow.users.filter(**{f"name__{op}": value}).all()
    assert {user.name for user in found} == expected


# -- relationship traversal --------------------------------------------------------------------

POSTS = {
    "ann@example.com": ["Hello World", "hello again", "Other"],
    "bob@example.org": ["HELLO there"],
    "zed@example.org": ["Misc"],
    "joanne@test.net": [],
    "anna@example.com": [],
}


def seed_posts(uow: AppUnitOfWork) -> dict[str, User]:
    seed_people(uow)
    with uow:
        users = {user.email: user for user in uow.users.all()}
        for email, titles in POSTS.items():
            for title in titles:
                uow.posts.create(title=title, author_id=users[email].id)
    return users


def titles(posts: Iterable[Post]) -> set[str]:
    return {post.title for post in posts}


def test_forward_traversal_through_a_many_to_one_relationship(uow: AppUnitOfWork) -> None:
    users = seed_posts(uow)
    with uow:
        assert titles(uow.posts.filter(author__email="ann@example.com")) == set(
            POSTS["ann@example.com"]
        )
        assert titles(uow.posts.filter(author__email__icontains="BOB@")) == {"HELLO there"}
        assert titles(uow.posts.filter(author__email__endswith=".org")) == {"HELLO there", "Misc"}
        assert titles(uow.posts.filter(author__age__gte=30, title__istartswith="hello")) == {
            "Hello World",
            "hello again",
            "HELLO there",
        }
        assert titles(uow.posts.filter(author__age__isnull=True)) == set()
        assert titles(uow.posts.filter(author__name__in=["zed", "Bob"])) == {"HELLO there", "Misc"}
        assert titles(uow.posts.filter(author=users["zed@example.org"])) == {"Misc"}
        assert titles(uow.posts.filter(author__exact=users["bob@example.org"])) == {"HELLO there"}
        assert uow.posts.filter(author=None).all() == []
        assert uow.posts.count(author__isnull=False) == 5
        assert titles(uow.posts.exclude(author__email="ann@example.com")) == {"HELLO there", "Misc"}


def test_reverse_to_many_traversal_returns_each_user_once(db: Database, uow: AppUnitOfWork) -> None:
    seed_posts(uow)
    with uow:
        uow.users.count()
        with count_statements(db.engine) as log:
            hello = uow.users.filter(posts__title__icontains="hello").all()
        assert len(log.matching("SELECT")) == 1
        # Ann has three posts matching "o" and Bob one: two rows, in lists and in counts.
        with_o = uow.users.filter(posts__title__icontains="o").all()
        assert uow.users.count(posts__title__icontains="o") == 2
        assert uow.users.filter(posts__title__icontains="o")[1:].count() == 1
        assert uow.users.filter(posts__title="Other").one().email == "ann@example.com"
        page = uow.users.filter(posts__isnull=False).order_by("email").paginate(1, 10)
        no_posts = uow.users.filter(posts__isnull=True).all()
        not_hello = uow.users.exclude(posts__title__icontains="hello").all()
    assert sorted(u.email for u in hello) == ["ann@example.com", "bob@example.org"]
    assert sorted(u.email for u in with_o) == ["ann@example.com", "bob@example.org"]
    assert [u.email for u in page.items] == [
        "ann@example.com",
        "bob@example.org",
        "zed@example.org",
    ]
    assert page.total == 3
    assert emails(no_posts) == {"joanne@test.net", "anna@example.com"}
    assert emails(not_hello) == {"joanne@test.net", "anna@example.com", "zed@example.org"}


def test_multi_level_traversal_in_both_directions(uow: AppUnitOfWork) -> None:
    seed_posts(uow)
    with uow:
        # Posts whose author also wrote "Other": all of Ann's posts, once each.
        siblings = uow.posts.filter(author__posts__title="Other").all()
        assert len(siblings) == 3
        assert titles(siblings) == set(POSTS["ann@example.com"])
        assert emails(uow.users.filter(posts__author__email="bob@example.org")) == {
            "bob@example.org"
        }
        deep = uow.users.filter(posts__author__posts__title__startswith="HELLO").all()
        assert [u.email for u in deep] == ["bob@example.org"]
        assert uow.posts.count(author__posts__author__age__lt=40) == 4


def test_raw_expressions_mix_with_lookups(db: Database, uow: AppUnitOfWork) -> None:
    seed_posts(uow)
    with uow:
        assert emails(uow.users.filter(User.age > 17, name__icontains="an")) == {"ann@example.com"}
        assert emails(uow.users.all(User.age > 3, name="zed")) == {"zed@example.org"}
        either = uow.users.filter(or_(User.age.is_(None), User.age < 18), email__endswith=".net")
        assert emails(either) == {"joanne@test.net"}
        assert emails(uow.users.exclude(User.age > 20, name__startswith="A")) == EVERYONE - {
            "ann@example.com"
        }
        assert titles(uow.posts.filter(Post.title.like("%e%"), author__age__gte=40)) == {
            "HELLO there"
        }
        assert uow.users.count(User.email.like("%.org"), posts__isnull=False) == 2
        with count_statements(db.engine) as log:
            assert uow.users.filter(User.age > 0, email__in=[]).all() == []
        assert log.statements == []
        page = uow.users.filter(User.age > 17, name__icontains="a").paginate(1, 2)
        assert (emails(page.items), page.total) == ({"ann@example.com"}, 1)
        adults = uow.users.filter(User.age >= 18, User.age <= 45)
        streamed = adults.filter(name__istartswith="B").iterator(2)
        assert emails(streamed) == {"bob@example.org"}


def test_an_expression_in_the_place_of_page_or_chunk_size_says_it_goes_in_filter(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        uow.users.count()
        with count_statements(db.engine) as log:
            for call in (
                lambda: uow.users.paginate(User.age > 3),  # type: ignore[arg-type]
                lambda: uow.users.paginate(1, User.age > 3),  # type: ignore[arg-type]
                lambda: uow.users.paginate(User.age),  # type: ignore[arg-type]
                lambda: uow.users.iterator(User.age > 3),  # type: ignore[arg-type]
            ):
                with pytest.raises(ValueError, match=r"expression goes in filter\(\)"):
                    call()
        assert log.statements == []


# -- `in` with no values -----------------------------------------------------------------------


@pytest.mark.parametrize("empty", [[], (), set()], ids=["list", "tuple", "set"])
def test_in_with_no_values_matches_nothing_without_sql(
    db: Database, uow: AppUnitOfWork, empty: Iterable[Any]
) -> None:
    seed_posts(uow)
    with uow:
        uow.users.count()
        with count_statements(db.engine) as log:
            assert uow.users.all(email__in=empty) == []
            assert uow.users.first(email__in=empty) is None
            assert uow.users.count(email__in=empty) == 0
            assert uow.users.exists(email__in=empty) is False
            with pytest.raises(DoesNotExist):
                uow.users.one(email__in=empty)
            query = uow.users.filter(age__gte=0, email__in=empty)
            assert query.filter(name="Ann").order_by("-age")[:3].all() == []
            assert query.first() is None
            assert query.count() == 0
            assert query.exists() is False
            assert uow.users.filter(posts__title__in=empty).all() == []
            assert uow.posts.all(author__email__in=empty) == []
        assert log.statements == []
        assert emails(uow.users.exclude(email__in=empty)) == EVERYONE
        assert emails(uow.users.exclude(posts__title__in=empty)) == EVERYONE


@pytest.mark.parametrize("method", ["filter", "exclude"])
def test_in_with_no_values_still_validates_the_other_lookups(
    uow: AppUnitOfWork, method: str
) -> None:
    with uow:
        call = getattr(uow.users, method)
        with pytest.raises(FieldError, match="nmae"):
            call(email__in=[], nmae="Ann")
        with pytest.raises(FieldError, match="isnull"):
            call(email__in=[], age__isnull="yes")


def test_in_takes_any_iterable_but_a_string_and_checks_every_value_it_yields(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed_people(uow)
    with uow:
        users = uow.users
        assert emails(users.all(age__in=(age for age in (30, 45)))) == {
            "ann@example.com",
            "bob@example.org",
        }
        assert emails(users.all(age__in=range(17, 19))) == {"anna@example.com", "zed@example.org"}
        assert emails(users.all(name__in={"Bob": 1}.keys())) == {"bob@example.org"}
        users.count()
        with count_statements(db.engine) as log:
            with pytest.raises(FieldError, match=r"User\.age holds int"):
                users.all(age__in=(value for value in ["30"]))
            with pytest.raises(FieldError, match=r"User\.age holds int"):
                users.filter(age__in=iter([30, "x"]))
            with pytest.raises(FieldError, match="list or tuple"):
                users.all(age__range={45, 17})  # a set has no order: which bound is low?
            with pytest.raises(FieldError, match="list or tuple"):
                users.all(age__range=(bound for bound in (17, 45)))
        assert log.statements == []
        assert users.count(age__range=[17, 30]) == 3


def test_in_with_more_values_than_one_statement_binds_raises_field_error_before_sql(
    db: Database, uow: AppUnitOfWork, backend: str
) -> None:
    too_many = parameter_limit(backend) + 1  # SQLite's comes from the library build
    seed_people(uow)
    with uow:
        uow.users.count()
        with count_statements(db.engine) as log, pytest.raises(FieldError, match="in_bulk"):
            uow.users.all(id__in=range(too_many))
        assert log.statements == []
        assert uow.users.count(id__in=range(30_000)) == len(PEOPLE)  # many, but within limits
        assert len(uow.users.in_bulk(range(too_many))) == len(PEOPLE)


WIDE = 2**40  # beyond PostgreSQL's INTEGER (users.age, users.id), within a 64-bit integer
WITH_AGE = EVERYONE - {"joanne@test.net"}
WIDE_INTEGER_CASES: list[tuple[dict[str, Any], bool, frozenset[str]]] = [
    ({"age": WIDE}, False, frozenset()),
    ({"age": WIDE}, True, EVERYONE),
    ({"age": -WIDE}, False, frozenset()),
    ({"age__lt": WIDE}, False, WITH_AGE),
    ({"age__lte": -WIDE}, False, frozenset()),
    ({"age__gt": -WIDE}, False, WITH_AGE),
    ({"age__gte": WIDE}, False, frozenset()),
    ({"age__gt": WIDE}, True, EVERYONE),
    ({"age__in": [30, WIDE, -WIDE]}, False, frozenset({"ann@example.com"})),
    ({"age__in": [WIDE]}, False, frozenset()),
    ({"age__range": (-WIDE, WIDE)}, False, WITH_AGE),
    (
        {"age__range": (18, WIDE)},
        False,
        frozenset({"ann@example.com", "bob@example.org", "zed@example.org"}),
    ),
    ({"age__range": (-WIDE, 17)}, False, frozenset({"anna@example.com"})),
    ({"age__range": (WIDE, WIDE + 1)}, False, frozenset()),
    ({"id__range": (0, WIDE)}, False, EVERYONE),
    ({"posts__author__age__lt": WIDE}, False, frozenset()),
]


@pytest.mark.parametrize(
    ("lookups", "exclude", "expected"),
    WIDE_INTEGER_CASES,
    ids=[f"{'exclude' if ex else 'filter'}-{lk}" for lk, ex, _ in WIDE_INTEGER_CASES],
)
def test_integers_wider_than_the_column_give_the_same_rows_on_every_database(
    uow: AppUnitOfWork, lookups: dict[str, Any], exclude: bool, expected: frozenset[str]
) -> None:
    # PostgreSQL refuses to compare an INTEGER column with a wider number (and aborts the
    # transaction); no row can hold one, so the answer is known without asking it.
    seed_people(uow)
    with uow:
        query = uow.users.exclude(**lookups) if exclude else uow.users.filter(**lookups)
        assert emails(query) == expected
        assert uow.users.count() == len(PEOPLE)  # the transaction is still usable


class VariantBase(DeclarativeBase):
    pass


class Counter(VariantBase):
    __tablename__ = "counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    hits: Mapped[int] = mapped_column(Integer().with_variant(BigInteger(), "postgresql"))


def test_a_column_made_bigint_on_postgresql_by_a_variant_compares_wide_integers(
    db: Database,
) -> None:
    VariantBase.metadata.create_all(db.engine)
    try:
        with db.Session() as session, session.begin():
            session.add_all([Counter(hits=WIDE), Counter(hits=1)])
            session.flush()
            counters = Repository(session, Counter)
            assert [c.hits for c in counters.all(hits=WIDE)] == [WIDE]
            assert counters.count(hits__gt=2**31) == 1
            assert counters.count(hits__in=[WIDE, 1]) == 2
    finally:
        VariantBase.metadata.drop_all(db.engine)


# -- validation before SQL ---------------------------------------------------------------------

USER_FIELDS = ["age", "email", "id", "name", "posts"]
OPERATOR_NAMES = ["exact", "iexact", "icontains", "istartswith", "range", "isnull"]

# (repository, lookups, text the message must contain)
INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    ("users", {"nmae": "Ann"}, ["'nmae'", "valid fields", *USER_FIELDS]),
    ("users", {"name__containz": "A"}, ["'containz'", "valid operators", *OPERATOR_NAMES]),
    ("users", {"name__exact__exact": "A"}, ["'exact'"]),
    ("users", {"name__": "A"}, ["valid operators"]),
    ("users", {"__name": "A"}, ["valid fields", *USER_FIELDS]),
    ("users", {"": "A"}, ["valid fields"]),
    ("users", {"posts__titel": "A"}, ["'titel'", "title", "author"]),
    ("users", {"posts__author__emial": "A"}, ["'emial'", "email"]),
    ("posts", {"author__emial": "A"}, ["'emial'", "valid fields", *USER_FIELDS]),
    ("posts", {"author__email__like": "A"}, ["'like'", "valid operators"]),
    ("users", {"name; DROP TABLE users": "A"}, ["'name; DROP TABLE users'", "valid fields"]),
    ("users", {"name) OR (1=1": "A"}, ["'name) OR (1=1'"]),
    ("users", {"metadata": "A"}, ["'metadata'", "valid fields"]),
    ("users", {"posts": None}, ["posts", "collection"]),
    ("users", {"age__isnull": "yes"}, ["isnull"]),
    ("users", {"age__isnull": 1}, ["isnull"]),
    ("users", {"age__isnull": None}, ["isnull"]),
    ("users", {"posts__isnull": 0}, ["isnull"]),
    ("posts", {"author__isnull": "no"}, ["isnull"]),
    ("users", {"age__range": (1, 2, 3)}, ["range"]),
    ("users", {"age__range": [1]}, ["range"]),
    ("users", {"age__range": 5}, ["range"]),
    ("users", {"name__range": "az"}, ["range"]),
    ("users", {"age__range": (None, 5)}, ["range"]),
    ("users", {"name__in": "Ann"}, ["'in'"]),
    ("users", {"name__in": b"Ann"}, ["'in'"]),
    ("users", {"age__in": 5}, ["'in'"]),
    ("users", {"age__in": None}, ["'in'"]),
    ("users", {"name__contains": 5}, ["contains"]),
    ("users", {"name__icontains": None}, ["icontains"]),
    ("users", {"age__gt": None}, ["isnull"]),
    ("users", {"name": "A\x00nn"}, ["User.name", "NUL"]),
    ("users", {"name__icontains": "\x00"}, ["User.name", "NUL"]),
    ("users", {"email__in": ["ann@example.com", "b\x00"]}, ["User.email", "NUL"]),
    ("posts", {"author__name__startswith": "\x00A"}, ["User.name", "NUL"]),
]

CALLS: dict[str, Callable[[Repository[Any], dict[str, Any]], object]] = {
    "filter": lambda repo, lookups: repo.filter(**lookups),
    "exclude": lambda repo, lookups: repo.exclude(**lookups),
    "chained filter": lambda repo, lookups: repo.filter(id__gt=0).filter(**lookups),
    "all": lambda repo, lookups: repo.all(**lookups),
    "first": lambda repo, lookups: repo.first(**lookups),
    "one": lambda repo, lookups: repo.one(**lookups),
    "count": lambda repo, lookups: repo.count(**lookups),
    "exists": lambda repo, lookups: repo.exists(**lookups),
    "paginate": lambda repo, lookups: repo.paginate(1, 10, **lookups),
    "iterator": lambda repo, lookups: repo.iterator(**lookups),
}


@pytest.mark.parametrize(
    ("repository", "lookups", "needles"), INVALID, ids=[repr(lk) for _, lk, _ in INVALID]
)
def test_invalid_lookup_raises_field_error_before_sql_and_the_transaction_stays_usable(
    db: Database, uow: AppUnitOfWork, repository: str, lookups: dict[str, Any], needles: list[str]
) -> None:
    seed_people(uow)
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        repo = getattr(uow, repository)
        with count_statements(db.engine) as log:
            for name, call in CALLS.items():
                with pytest.raises(FieldError) as info:
                    call(repo, lookups)
                message = str(info.value)
                missing = [needle for needle in needles if needle not in message]
                assert not missing, f"{name}: {message!r} lacks {missing}"
        assert log.statements == []
        uow.users.create(email="after@example.com", name="After")
        assert uow.users.count() == len(PEOPLE) + 2
    assert stored_emails(db) == EVERYONE | {"before@example.com", "after@example.com"}


CONTAINER_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("users", {"name": ["Ann"]}),
    ("users", {"name": ("Ann",)}),
    ("users", {"name__exact": {"Ann": 1}}),
    ("users", {"age__gt": [1]}),
    ("users", {"age__lte": {"a": 1}}),
    ("users", {"age__range": ([1], [2])}),
    ("users", {"name__in": [["Ann"]]}),
    ("posts", {"author": 1}),
    ("posts", {"author": "ann@example.com"}),
]


@pytest.mark.parametrize(
    ("repository", "lookups"), CONTAINER_VALUES, ids=[repr(lk) for _, lk in CONTAINER_VALUES]
)
def test_a_value_of_the_wrong_shape_raises_field_error_before_sql(
    db: Database, uow: AppUnitOfWork, repository: str, lookups: dict[str, Any]
) -> None:
    seed_posts(uow)
    with uow:
        uow.users.create(email="before@example.com", name="Before")
        with count_statements(db.engine) as log, pytest.raises(FieldError):
            getattr(uow, repository).filter(**lookups).all()
        assert log.statements == []
        uow.users.create(email="after@example.com", name="After")
    assert stored_emails(db) == EVERYONE | {"before@example.com", "after@example.com"}


def test_a_relationship_lookup_rejects_an_instance_of_another_model(
    db: Database, uow: AppUnitOfWork
) -> None:
    # A Post whose primary key equals a User's: comparing `author` with it must not match
    # the posts of that user by accident.
    users = seed_posts(uow)
    with uow:
        post = uow.posts.one(title="Misc")
        assert any(user.id == post.id for user in users.values())
        with count_statements(db.engine) as log, pytest.raises(FieldError):
            uow.posts.filter(author=post).all()
        assert log.statements == []


def test_sql_looking_keys_never_reach_the_database(db: Database, uow: AppUnitOfWork) -> None:
    seed_people(uow)
    keys = ["email; DELETE FROM users", "email = email OR 1=1 --", "users.email", "email\x00"]
    with uow, count_statements(db.engine) as log:
        for key in keys:
            with pytest.raises(FieldError, match="valid fields"):
                uow.users.filter(**{key: "x"})
    assert log.statements == []
    assert stored_emails(db) == EVERYONE
