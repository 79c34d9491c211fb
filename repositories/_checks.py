"""Argument checks the repository and query methods share."""

from __future__ import annotations

from typing import Any

from sqlalchemy.sql.elements import ClauseElement


def check_positive_int(name: str, value: Any, *, optional: bool = False) -> None:
    """Refuse anything but a positive int (or None when `optional`), naming the argument.

    Raises:
        ValueError: `value` is not a positive int (a bool is not one). An SQL expression gets
            a hint: it belongs in `filter()`, not in the place of a size or a page number.
    """
    if optional and value is None:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    expected = "None or a positive integer" if optional else "a positive integer"
    hint = ""
    if isinstance(value, ClauseElement) or hasattr(value, "__clause_element__"):
        hint = "; an expression goes in filter(): repository.filter(<expression>).<method>(...)"
    raise ValueError(f"{name} must be {expected}, not {value!r}{hint}")
