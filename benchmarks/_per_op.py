"""One operation per unit of work: the project, what a user writes without it, the raw driver.

Each project operation runs in its own `with uow:` block. Its SQLAlchemy baseline is the code a
user writes with a plain `create_engine(url)` and default settings: `with Session(engine) as s,
s.begin():` for reads and creates, and the naive get-or-create (SELECT; if nothing, add and
commit; on a unique violation, roll back and SELECT) for the get-or-create family. The raw
driver runs in autocommit mode: one statement per round trip, no BEGIN or COMMIT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from _common import Person, Setup, best_of, fresh_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from collections.abc import Callable

SEED = 2000
READS = ("get by pk", "first by unique field", "first_or_create hit")


@dataclass(frozen=True)
class Operation:
    name: str
    baseline: str  # what the SQLAlchemy column holds for this operation
    project: Callable[[], Any]
    plain: Callable[[], Any]
    raw: Callable[[], Any]


def operations(setup: Setup) -> list[Operation]:
    uow, raw, engine = setup.uow, setup.raw, setup.plain
    pk, email = SEED // 2, f"seed{SEED // 2}@example.com"

    def plain_get() -> None:
        with Session(engine) as s, s.begin():
            s.get(Person, pk)

    def project_get() -> None:
        with uow:
            uow.people.get(pk)

    def plain_first() -> None:
        # Built in the call, as a user writes it: a statement kept across calls would skip
        # the work every call of the project does (the lookups compile to a new statement).
        with Session(engine) as s, s.begin():
            s.scalars(
                select(Person).where(Person.email == email).order_by(Person.id).limit(1)
            ).first()

    def project_first() -> None:
        with uow:
            uow.people.first(email=email)

    def plain_create() -> None:
        with Session(engine) as s, s.begin():
            s.add(Person(email=fresh_email(), name="x"))

    def project_create() -> None:
        with uow:
            uow.people.create(email=fresh_email(), name="x")

    def project_first_or_create(address: str) -> None:
        with uow:
            uow.people.first_or_create(email=address, defaults={"name": "x"})

    def project_create_or_first() -> None:
        with uow:
            uow.people.create_or_first(email=email, defaults={"name": "x"})

    def raw_first_or_create(address: str) -> None:
        if raw.one("email", address) is None:
            raw.insert(address)

    def raw_create_or_first() -> None:
        try:
            raw.insert(email)
        except raw.IntegrityError:
            raw.one("email", email)

    naive = "naive get-or-create"
    return [
        Operation("get by pk", "plain", project_get, plain_get, lambda: raw.one("id", pk)),
        Operation(
            "first by unique field",
            "plain",
            project_first,
            plain_first,
            lambda: raw.one("email", email),
        ),
        Operation(
            "first_or_create hit",
            naive,
            lambda: project_first_or_create(email),
            lambda: naive_get_or_create(engine, email),
            lambda: raw_first_or_create(email),
        ),
        Operation(
            "first_or_create miss",
            naive,
            lambda: project_first_or_create(fresh_email()),
            lambda: naive_get_or_create(engine, fresh_email()),
            lambda: raw_first_or_create(fresh_email()),
        ),
        Operation(
            "create_or_first conflict",
            naive,
            project_create_or_first,
            lambda: naive_create_or_get(engine, email),
            raw_create_or_first,
        ),
        Operation(
            "create + commit",
            "plain",
            project_create,
            plain_create,
            lambda: raw.insert(fresh_email()),
        ),
    ]


def naive_get_or_create(engine: Any, email: str) -> Person:
    """What a user writes for get-or-create with plain SQLAlchemy (not race-safe)."""
    with Session(engine) as s:
        person = s.scalars(select(Person).where(Person.email == email).limit(1)).first()
        if person is None:
            person = Person(email=email, name="x")
            s.add(person)
            s.commit()
        return person


def naive_create_or_get(engine: Any, email: str) -> Person | None:
    """Insert first; on a unique violation roll back and SELECT (the naive create-or-get)."""
    with Session(engine) as s:
        s.add(Person(email=email, name="x"))
        try:
            s.commit()
        except IntegrityError:
            s.rollback()
            return s.scalars(select(Person).where(Person.email == email).limit(1)).first()
        return None


@dataclass(frozen=True)
class Timing:
    name: str
    baseline: str
    raw: float
    plain: float
    project: float


def measure(setup: Setup, quick: bool) -> list[Timing]:
    """Seconds per operation for each of the three, measured in turns."""
    number, rounds = (100, 3) if quick else (300, 7)
    timings = []
    for op in operations(setup):
        best = best_of({"raw": op.raw, "plain": op.plain, "project": op.project}, number, rounds)
        timings.append(Timing(op.name, op.baseline, best["raw"], best["plain"], best["project"]))
    return timings
