"""Kept statements: a query of the same shape is one statement, whatever its values.

Lookups that compare a column with one value become conditions with named parameters, made once
and kept; a query made only of those (and of field orderings) is built once per shape and run
with its values. These tests check that the values never leak from one query to another, that
every terminal and every refinement still gives the rows it should, and that the statement is
really reused.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Date, bindparam, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from repositories import Repository
from tests.integration.helpers import seed, stored
from tests.models import AppUnitOfWork, Post, User
from uow import Database, UnitOfWork

pytestmark = pytest.mark.both_faces

PEOPLE = [
    ("ada@example.com", "Ada", 36),
    ("bob@example.com", "Bob", 17),
    ("cy@example.com", "Cy", 52),
    ("di@example.com", "Di", 36),
]


@pytest.fixture
def people(uow: AppUnitOfWork) -> AppUnitOfWork:
    seed(uow, *PEOPLE)
    return uow


def emails(users: Any) -> list[str]:
    return sorted(user.email for user in users)


def test_queries_of_one_shape_reuse_one_statement_with_their_own_values(
    db: Database, people: AppUnitOfWork
) -> None:
    uow = people
    executed: list[Any] = []

    def record(_conn: Any, clause: Any, *_args: Any) -> None:
        executed.append(clause)

    event.listen(db.engine, "before_execute", record)
    try:
        with uow:
            ada = uow.users.first(email="ada@example.com")
            bob = uow.users.first(email="bob@example.com")
    finally:
        event.remove(db.engine, "before_execute", record)
    assert ada is not None
    assert bob is not None
    assert (ada.name, bob.name) == ("Ada", "Bob")
    assert executed[0] is executed[1]  # one statement, two sets of values


def test_every_terminal_gives_the_rows_of_its_own_values(people: AppUnitOfWork) -> None:
    uow = people
    with uow:
        for age, expected in [
            (36, ["ada@example.com", "di@example.com"]),
            (52, ["cy@example.com"]),
        ]:
            query = uow.users.filter(age=age)
            assert emails(query.all()) == expected
            assert query.count() == len(expected)
            assert query.exists()
            assert emails(query.iterator(10)) == expected
            assert emails(query.paginate(1, 10).items) == expected
            assert query.first() is not None
        assert uow.users.filter(age=99).first() is None
        assert not uow.users.filter(age=99).exists()


def test_refining_a_query_keeps_each_value_in_its_place(people: AppUnitOfWork) -> None:
    uow = people
    with uow:
        # The same field twice: two parameters, not one.
        adults = uow.users.filter(age__gte=18).filter(age__lte=40)
        assert emails(adults) == ["ada@example.com", "di@example.com"]
        both = uow.users.filter(age__gte=18).filter(age__gte=40)
        assert emails(both) == ["cy@example.com"]
        ordered = uow.users.filter(age__gte=18).order_by("-age", "email")
        assert [u.email for u in ordered] == ["cy@example.com", "ada@example.com", "di@example.com"]
        assert [u.email for u in ordered[1:3]] == ["ada@example.com", "di@example.com"]
        assert ordered[1:3].count() == 2
        assert emails(uow.users.filter(age=36).exclude(name="Di")) == ["ada@example.com"]
        assert emails(uow.users.filter(age=36).filter(name__startswith="D")) == ["di@example.com"]
        assert uow.users.filter(age=36).select_for_update().count() == 2
        statement = str(
            uow.users.filter(email="ada@example.com")
            .statement()
            .compile(compile_kwargs={"literal_binds": True})
        )
        assert "'ada@example.com'" in statement  # statement() carries its values


def test_update_and_delete_of_a_kept_query_use_its_values(
    db: Database, people: AppUnitOfWork
) -> None:
    uow = people
    with uow:
        assert uow.users.filter(age=36).update(age=37) == 2
        assert uow.users.filter(email="bob@example.com").delete() == 1
    assert stored(db) == {
        "ada@example.com": ("Ada", 37),
        "cy@example.com": ("Cy", 52),
        "di@example.com": ("Di", 37),
    }


def test_values_a_template_cannot_stand_for_still_work(people: AppUnitOfWork) -> None:
    uow = people
    with uow:
        assert uow.users.filter(age=None).count() == 0  # IS NULL, not = NULL
        assert uow.users.filter(age__lt=2**40).count() == 4  # wider than the column
        assert emails(uow.users.filter(age__in=[17, 52])) == ["bob@example.com", "cy@example.com"]
        assert uow.users.filter(posts__isnull=False).count() == 0  # through a relationship
        assert isinstance(uow.users.get_or_create(email="ada@example.com")[0], User)


def test_another_querys_statement_as_a_subquery_keeps_its_own_values(
    db: Database, people: AppUnitOfWork
) -> None:
    uow = people
    with uow:
        bob = uow.users.one(email="bob@example.com")
        uow.posts.create(title="Hello", author_id=bob.id)
    with uow:
        authors = uow.posts.filter(title="Hello").statement().with_only_columns(Post.author_id)
        first = uow.users.filter(User.id.in_(authors)).filter(name="Bob")
        then = uow.users.filter(name="Bob").filter(User.id.in_(authors))
        assert emails(first) == ["bob@example.com"]
        assert emails(then) == ["bob@example.com"]


def test_a_users_own_parameter_names_never_meet_the_librarys(people: AppUnitOfWork) -> None:
    uow = people
    with uow:
        mine = User.age == bindparam("uow_lookup_0", 17)  # the name a template would take
        assert emails(uow.users.filter(mine).filter(age=36)) == []
        assert emails(uow.users.filter(mine).filter(name="Bob")) == ["bob@example.com"]
        assert emails(
            uow.users.filter(age=17).order_by(User.age + bindparam("uow_lookup_0", 1))
        ) == ["bob@example.com"]


class DatesBase(DeclarativeBase):
    pass


class Day(DatesBase):
    __tablename__ = "days"
    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date)


@pytest.mark.sync_only(reason="subclasses the sync UnitOfWork")
def test_a_value_compared_as_its_own_type_gives_the_rows_it_did(db: Database) -> None:
    # A datetime against a DATE column is compared as a datetime, not cut to its date.
    DatesBase.metadata.create_all(db.engine)

    class DaysUnitOfWork(UnitOfWork):
        days: Repository[Day]

    uow = DaysUnitOfWork(db)
    noon = dt.datetime(2024, 1, 1, 12)
    with uow:
        uow.days.create(day=dt.date(2024, 1, 1))
        assert uow.days.filter(day__lt=noon).count() == 1
        assert uow.days.filter(day=noon).count() == 0
        assert uow.days.filter(day__gte=noon).count() == 0
