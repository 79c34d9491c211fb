"""Typed, Django-style repositories over SQLAlchemy 2.x sessions."""

from __future__ import annotations

from repositories.errors import DoesNotExist, FieldError, MultipleObjectsReturned, UowError
from repositories.query import Query
from repositories.repository import Repository
from repositories.schemas import Page

__all__ = [
    "DoesNotExist",
    "FieldError",
    "MultipleObjectsReturned",
    "Page",
    "Query",
    "Repository",
    "UowError",
]
