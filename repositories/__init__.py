"""Typed, Django-style repositories over SQLAlchemy 2.x sessions."""

from __future__ import annotations

from repositories.async_repository import AsyncQuery, AsyncRepository
from repositories.errors import DoesNotExist, FieldError, MultipleObjectsReturned, UowError
from repositories.query import Query
from repositories.repository import Repository
from repositories.schemas import Page

__all__ = [
    "AsyncQuery",
    "AsyncRepository",
    "DoesNotExist",
    "FieldError",
    "MultipleObjectsReturned",
    "Page",
    "Query",
    "Repository",
    "UowError",
]
