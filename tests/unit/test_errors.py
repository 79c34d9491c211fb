from __future__ import annotations

import subprocess
import sys

import pytest

import repositories
import uow
from uow.errors import (
    DoesNotExist,
    DriverNotInstalledError,
    FieldError,
    MultipleObjectsReturned,
    SettingsError,
    UnitOfWorkError,
    UowError,
)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (DoesNotExist, LookupError),
        (MultipleObjectsReturned, LookupError),
        (FieldError, ValueError),
        (UnitOfWorkError, RuntimeError),
        (SettingsError, ValueError),
        (DriverNotInstalledError, ImportError),
    ],
)
def test_every_error_derives_from_the_library_base_and_a_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, UowError)
    assert issubclass(error, builtin)


def test_both_packages_export_the_same_error_classes() -> None:
    for name in ["DoesNotExist", "FieldError", "MultipleObjectsReturned", "UowError"]:
        assert getattr(uow, name) is getattr(repositories, name)
        assert getattr(uow.errors, name) is getattr(repositories.errors, name)


def test_the_session_side_errors_live_in_uow_only() -> None:
    for name in ["UnitOfWorkError", "SettingsError", "DriverNotInstalledError"]:
        assert getattr(uow, name).__module__ == "uow.errors"
        assert not hasattr(repositories, name)


def test_importing_repositories_loads_no_uow_module() -> None:
    # In a fresh interpreter: this one has imported uow already.
    code = "import sys, repositories; print(sorted(m for m in sys.modules if m[:3] == 'uow'))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_public_all_lists_are_sorted() -> None:
    assert list(uow.__all__) == sorted(uow.__all__)
    assert list(repositories.__all__) == sorted(repositories.__all__)
