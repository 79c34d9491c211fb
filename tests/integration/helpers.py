"""Helpers the repository tests share: seed users, read back what was committed."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import select

from tests.models import AppUnitOfWork, User
from uow import Database, _liveness

T = TypeVar("T")

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


def rotated(keys: Sequence[T], caller: int, callers: int) -> list[T]:
    """`keys` starting at the `caller`-th of `callers` evenly spaced points, wrapping around:
    racing callers each start with a different key and meet on all the others."""
    shift = caller * len(keys) // callers
    return [*keys[shift:], *keys[:shift]]


def race_in_processes(
    target: Callable[..., None], args: tuple[Any, ...], workers: int
) -> list[str]:
    """Run `target(*args, worker, barrier, results)` in `workers` forked processes; their errors.

    Each process gets its number, a barrier for all of them (to release them together) and a
    queue on which it puts one list of error strings; a process that exits badly counts as an
    error too. Dispose of the engines in `args` first, so that no child inherits a connection.
    """
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers)
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*args, worker, barrier, results))
        for worker in range(workers)
    ]
    for process in processes:
        process.start()
    errors = [error for _ in processes for error in results.get(timeout=240)]
    for process in processes:
        process.join(timeout=60)
    exit_codes = [process.exitcode for process in processes]
    return errors + [f"worker exited with {code}" for code in exit_codes if code != 0]
