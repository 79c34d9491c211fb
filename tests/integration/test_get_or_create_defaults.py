"""Which value wins when the get-or-create family creates a row, and callables in defaults.

The two Django-named methods follow Django: `defaults` (and `create_defaults`) win over the
plain lookups. `first_or_create`/`create_or_first` make the row the caller asked for: `attrs`
win. Callables in defaults are called once, only when their value is used (Django's rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.helpers import seed, stored
from tests.models import AppUnitOfWork
from uow import Database

pytestmark = pytest.mark.both_faces

# -- precedence --------------------------------------------------------------------------------


def test_get_or_create_lets_defaults_win_over_the_lookups_when_creating(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        user, created = uow.users.get_or_create(
            email="ada@example.com", name="Lookup", defaults={"name": "Default", "age": 3}
        )
        assert created
        assert (user.name, user.age) == ("Default", 3)
    assert stored(db) == {"ada@example.com": ("Default", 3)}


def test_update_or_create_lets_create_defaults_win_over_the_lookups_when_creating(
    db: Database, uow: AppUnitOfWork
) -> None:
    with uow:
        first, created = uow.users.update_or_create(
            email="ada@example.com", name="Lookup", defaults={"name": "Default"}
        )
        assert created
        assert first.name == "Default"
        second, created = uow.users.update_or_create(
            email="bob@example.com",
            name="Lookup",
            defaults={"name": "Default"},
            create_defaults={"name": "Created"},
        )
        assert created
        assert second.name == "Created"
    assert stored(db) == {
        "ada@example.com": ("Default", None),
        "bob@example.com": ("Created", None),
    }


@pytest.mark.parametrize("method", ["first_or_create", "create_or_first"])
def test_first_or_create_and_create_or_first_let_attrs_win_over_defaults(
    db: Database, uow: AppUnitOfWork, method: str
) -> None:
    with uow:
        user = getattr(uow.users, method)(
            email="ada@example.com", name="Attr", defaults={"name": "Default", "age": 3}
        )
        assert (user.name, user.age) == ("Attr", 3)
    assert stored(db) == {"ada@example.com": ("Attr", 3)}


# -- callables in defaults ---------------------------------------------------------------------


class Calls:
    """A default value factory that counts its calls."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.count = 0

    def __call__(self) -> Any:
        self.count += 1
        return self.value


_CREATING: dict[str, Callable[[AppUnitOfWork, Calls], object]] = {
    "first_or_create": lambda u, c: u.users.first_or_create(
        email="ada@example.com", defaults={"name": c}
    ),
    "create_or_first": lambda u, c: u.users.create_or_first(
        email="ada@example.com", defaults={"name": c}
    ),
    "get_or_create": lambda u, c: u.users.get_or_create(
        email="ada@example.com", defaults={"name": c}
    ),
    "update_or_create defaults": lambda u, c: u.users.update_or_create(
        email="ada@example.com", defaults={"name": c}
    ),
    "update_or_create create_defaults": lambda u, c: u.users.update_or_create(
        email="ada@example.com", defaults={"age": 5}, create_defaults={"name": c}
    ),
}


@pytest.mark.parametrize("call", _CREATING.values(), ids=_CREATING.keys())
def test_a_callable_default_is_called_once_when_the_row_is_created(
    db: Database, uow: AppUnitOfWork, call: Callable[[AppUnitOfWork, Calls], object]
) -> None:
    name = Calls("Ada")
    with uow:
        call(uow, name)
    assert name.count == 1
    assert stored(db)["ada@example.com"][0] == "Ada"


@pytest.mark.parametrize("method", ["first_or_create", "create_or_first", "get_or_create"], ids=str)
def test_a_callable_default_is_not_called_when_the_row_exists(
    db: Database, uow: AppUnitOfWork, method: str
) -> None:
    seed(uow, ("ada@example.com", "Ada", None))
    name = Calls("Other")
    with uow:
        getattr(uow.users, method)(email="ada@example.com", defaults={"name": name})
    # create_or_first tries its INSERT first, so it needs the value once; the others never do.
    assert name.count == (1 if method == "create_or_first" else 0)
    assert stored(db) == {"ada@example.com": ("Ada", None)}


def test_update_or_create_calls_update_defaults_once_and_create_defaults_never_on_a_hit(
    db: Database, uow: AppUnitOfWork
) -> None:
    seed(uow, ("ada@example.com", "Ada", None))
    age, name = Calls(41), Calls("Never")
    with uow:
        user, created = uow.users.update_or_create(
            email="ada@example.com", defaults={"age": age}, create_defaults={"name": name}
        )
        assert not created
        assert user.age == 41
    assert (age.count, name.count) == (1, 0)
    assert stored(db) == {"ada@example.com": ("Ada", 41)}
