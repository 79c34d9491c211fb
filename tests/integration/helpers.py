"""Helpers the repository tests share: seed users, read back what was committed."""

from __future__ import annotations

from sqlalchemy import select

from tests.models import AppUnitOfWork, User
from uow import Database, _liveness

# What the tests that check "the outer transaction stays usable" commit around the failure.
BEFORE_AND_AFTER = {"before@example.com": ("Before", None), "after@example.com": ("After", None)}


def stored(db: Database) -> dict[str, tuple[str, int | None]]:
    """The committed users as {email: (name, age)}, read on a fresh session."""
    with db.Session() as session:
        return {u.email: (u.name, u.age) for u in session.scalars(select(User))}


def seed(uow: AppUnitOfWork, *users: tuple[str, str, int | None]) -> list[User]:
    """Commit users given as (email, name, age) and return them."""
    with uow:
        return [uow.users.create(email=e, name=n, age=a) for e, n, a in users]


class Boom(Exception):
    """The application error raised inside blocks."""


def committed_emails(db: Database) -> set[str]:
    """The user emails visible to a brand-new session: what has really been committed."""
    with db.Session() as other:
        return set(other.scalars(select(User.email)))


def add_user(uow: AppUnitOfWork, email: str) -> User:
    """Create a user named after the local part of `email`."""
    return uow.users.create(email=email, name=email.split("@")[0])


def checkout_check(db: Database) -> str:
    """What the pool does at checkout: look at the socket, ping every time, or nothing."""
    if db.engine.pool._pre_ping:  # type: ignore[attr-defined]
        return "ping"
    return "socket" if _liveness.installed(db.engine) else "nothing"
