"""Typed, Django-style repositories over SQLAlchemy 2.x sessions."""

from __future__ import annotations

from repositories.query import Query
from repositories.repository import Repository
from repositories.schemas import Page
from uow.errors import (
    DoesNotExist,
    FieldError,
    MultipleObjectsReturned,
    UnitOfWorkError,
    UowError,
)

__all__ = [
    "DoesNotExist",
    "FieldError",
    "MultipleObjectsReturned",
    "Page",
    "Query",
    "Repository",
    "UnitOfWorkError",
    "UowError",
]
