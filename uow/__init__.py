"""Unit of work over SQLAlchemy 2.x: engines, the context-local session, transactions."""

from __future__ import annotations

from uow._scoped import ScopedSession
from uow.database import Database
from uow.errors import (
    DoesNotExist,
    FieldError,
    MultipleObjectsReturned,
    UnitOfWorkError,
    UowError,
)
from uow.session import Session
from uow.unit_of_work import UnitOfWork

__all__ = [
    "Database",
    "DoesNotExist",
    "FieldError",
    "MultipleObjectsReturned",
    "ScopedSession",
    "Session",
    "UnitOfWork",
    "UnitOfWorkError",
    "UowError",
]
