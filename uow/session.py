"""The Session class every `Database` makes: SQLAlchemy's, plus Django-style seed helpers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.orm import Session as _SqlaSession

from repositories.repository import Repository
from uow.errors import UnitOfWorkError

if TYPE_CHECKING:
    from pydantic import BaseModel
    from sqlalchemy.orm import SessionTransaction

__all__ = ["Session"]

M = TypeVar("M")


class Session(_SqlaSession):
    """A `sqlalchemy.orm.Session` with shortcuts for scripts and seeds.

    Each helper is a shortcut for the same method of `Repository(session, Model)`, so the
    semantics (validation, race safety) are the repository's. `get(Model, pk)` is SQLAlchemy's
    own `Session.get`.

    Examples:
        ```python
        with db.Session() as session, session.begin():
            ada = session.first_or_create(User, email="ada@example.com", defaults={"name": "Ada"})
        ```
    """

    # Set when the `with uow:` block that owned this session ends. A repository, query or
    # `uow.session` kept past its block still points here; without this guard its next use
    # would silently begin a transaction nobody ends (holding SQLite's write lock, or leaving a
    # PostgreSQL connection idle in transaction).
    _retired = False

    def _retire(self) -> None:
        """Refuse every later use that would need a transaction (called at the block's end)."""
        self._retired = True

    def _autobegin_t(self, begin: bool = False) -> SessionTransaction:
        # Every path to the database (execute, flush, get, connection) starts here, before a
        # connection is checked out, so a retired session fails before any SQL is sent.
        if self._retired:
            raise UnitOfWorkError(
                "this session belonged to a `with uow:` block that has ended: repositories, "
                "queries and uow.session are only usable inside their block. Use them inside "
                "`with uow:` (get uow.users again in the new block)"
            )
        return super()._autobegin_t(begin)

    def all(self, model: type[M], /, **lookups: Any) -> list[M]:
        """Shortcut for `Repository(session, model).all(**lookups)`."""
        return Repository(self, model).all(**lookups)

    def first(self, model: type[M], /, **lookups: Any) -> M | None:
        """Shortcut for `Repository(session, model).first(**lookups)`."""
        return Repository(self, model).first(**lookups)

    def create(
        self, model: type[M], data: BaseModel | dict[str, Any] | None = None, /, **attrs: Any
    ) -> M:
        """Shortcut for `Repository(session, model).create(data, **attrs)`."""
        return Repository(self, model).create(data, **attrs)

    def first_or_create(
        self, model: type[M], /, defaults: BaseModel | dict[str, Any] | None = None, **attrs: Any
    ) -> M:
        """Shortcut for `Repository(session, model).first_or_create(defaults, **attrs)`."""
        return Repository(self, model).first_or_create(defaults, **attrs)

    def create_or_first(
        self, model: type[M], /, defaults: BaseModel | dict[str, Any] | None = None, **attrs: Any
    ) -> M:
        """Shortcut for `Repository(session, model).create_or_first(defaults, **attrs)`."""
        return Repository(self, model).create_or_first(defaults, **attrs)
