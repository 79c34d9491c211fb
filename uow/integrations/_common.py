"""What the integrations share: resolving databases, removing sessions, the import guard."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from uow.database import Database

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "DatabaseSource",
    "databases",
    "missing",
    "remove_sessions",
]

DIST = "uow-repositories"

# A Database, or something that returns one when called: a dependency-injector provider such as
# `container.db.database`, resolved at each use so that a test's override takes effect.
DatabaseSource: TypeAlias = "Database | Callable[[], Database]"


def missing(extra: str, err: ImportError) -> ImportError:
    """The ImportError an integration raises when its framework is missing: names the extra.

    Use as `raise missing("flask", err) from err` around the framework's imports.
    """
    return ImportError(
        f"uow.integrations.{extra} needs {err.name or extra!r}, which is not installed: "
        f'pip install "{DIST}[{extra}]"',
        name=err.name,
    )


def databases(sources: Iterable[DatabaseSource]) -> list[Database]:
    """The Database of each source (calling the callables)."""
    return [source if isinstance(source, Database) else source() for source in sources]


def remove_sessions(sources: Iterable[DatabaseSource]) -> None:
    """Close and forget the current context's session of each database.

    A database with a `with uow:` block still open in this context is left alone: the hook
    fired inside the block (an eager Celery task sent from it, a nested Flask app context), and
    closing the block's session would silently drop its work.
    """
    for database in databases(sources):
        if not database.in_unit_of_work:
            database.s.remove()
