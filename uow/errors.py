"""The exceptions of both packages: the repository side's, re-exported, and the session side's.

Every error the library raises on purpose derives from [`UowError`][uow.errors.UowError], and,
where one fits, from a built-in too, so callers can catch either. The base class and the
repository errors live in `repositories.errors` (the package that raises them); they are the
same classes here.
"""

from __future__ import annotations

from repositories.errors import DoesNotExist, FieldError, MultipleObjectsReturned, UowError

__all__ = [
    "DoesNotExist",
    "DriverNotInstalledError",
    "FieldError",
    "MultipleObjectsReturned",
    "SettingsError",
    "UnitOfWorkError",
    "UowError",
]


class UnitOfWorkError(UowError, RuntimeError):
    """A unit of work was used outside its rules (for example outside `with uow:`)."""


class SettingsError(UowError, ValueError):
    """A setting has a bad value; the message names its environment variable."""


class DriverNotInstalledError(UowError, ImportError):
    """The database driver a URL needs is not installed; the message says what to install."""
