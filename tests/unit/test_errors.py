from __future__ import annotations

import pytest

import repositories
import uow
from uow.errors import (
    DoesNotExist,
    FieldError,
    MultipleObjectsReturned,
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
    ],
)
def test_every_error_derives_from_the_library_base_and_a_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, UowError)
    assert issubclass(error, builtin)


def test_both_packages_export_the_same_error_classes() -> None:
    for name in [
        "DoesNotExist",
        "FieldError",
        "MultipleObjectsReturned",
        "UnitOfWorkError",
        "UowError",
    ]:
        assert getattr(uow, name) is getattr(repositories, name)


def test_public_all_lists_are_sorted() -> None:
    assert list(uow.__all__) == sorted(uow.__all__)
    assert list(repositories.__all__) == sorted(repositories.__all__)
