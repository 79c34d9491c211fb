"""Unit of work over SQLAlchemy 2.x: engines, the context-local session, transactions."""

from __future__ import annotations

from uow._retry import is_retryable
from uow._scoped import ScopedSession
from uow.async_database import AsyncDatabase
from uow.async_session import AsyncScopedSession, AsyncSession, LazyLoadError
from uow.async_unit_of_work import AsyncUnitOfWork
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
    "AsyncDatabase",
    "AsyncScopedSession",
    "AsyncSession",
    "AsyncUnitOfWork",
    "Database",
    "DoesNotExist",
    "DriverNotInstalledError",
    "FieldError",
    "LazyLoadError",
    "MultipleObjectsReturned",
    "ScopedSession",
    "Session",
    "SettingsError",
    "UnitOfWork",
    "UnitOfWorkError",
    "UowError",
    "is_retryable",
]
