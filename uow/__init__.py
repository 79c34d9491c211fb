"""Unit of work over SQLAlchemy 2.x: engines, the context-local session, transactions."""

from __future__ import annotations

from uow._scoped import ScopedSession
from uow.database import Database
from uow.errors import (
    DoesNotExist,
    DriverNotInstalledError,
    FieldError,
    MultipleObjectsReturned,
    SettingsError,
    UnitOfWorkError,
    UowError,
)
from uow.session import Session
from uow.unit_of_work import UnitOfWork

__all__ = [
    "Database",
    "DoesNotExist",
    "DriverNotInstalledError",
    "FieldError",
    "MultipleObjectsReturned",
    "ScopedSession",
    "Session",
    "SettingsError",
    "UnitOfWork",
    "UnitOfWorkError",
    "UowError",
]
