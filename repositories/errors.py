"""The library's base error and the errors of the repository side.

Every error the library raises on purpose derives from [`UowError`][repositories.errors.UowError],
and, where one fits, from a built-in too, so callers can catch either. `uow` re-exports these
classes (`from uow import FieldError` and `from repositories import FieldError` name one class)
and adds its own. Integrity errors that the repository semantics do not handle are SQLAlchemy's
own `IntegrityError`, unchanged.
"""

from __future__ import annotations

__all__ = [
    "DoesNotExist",
    "FieldError",
    "MultipleObjectsReturned",
    "UowError",
]


class UowError(Exception):
    """Base class of every error raised by `uow` and `repositories`."""


class FieldError(UowError, ValueError):
    """A lookup, ordering or value names something the model does not have.

    Raised before any SQL runs, so the transaction stays usable.
    """


class DoesNotExist(UowError, LookupError):
    """`one()` (or `get_or_create`'s re-read) found no row matching the lookups."""


class MultipleObjectsReturned(UowError, LookupError):
    """`one()` found more than one row matching the lookups."""
