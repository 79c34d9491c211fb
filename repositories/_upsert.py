"""`bulk_create(update_conflicts=True)`: its options checked as Django checks them, its
`ON CONFLICT (unique_fields) DO UPDATE` clause, and the order its rows are sent in and come
back in.

The batches themselves run in `repositories._bulk`, like any INSERT ... RETURNING.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from repositories._fields import check_columns, fields_of
from repositories._unique import check_conflict_target
from repositories.errors import FieldError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["SendOrder", "Upsert", "on_conflict_do_update", "upsert_of"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Upsert:
    """Rows whose `unique_fields` match an existing row's update its `update_fields` with the
    proposed values (`ON CONFLICT (unique_fields) DO UPDATE SET f = EXCLUDED.f`)."""

    unique_fields: tuple[str, ...]
    update_fields: tuple[str, ...]


def upsert_of(
    model: type[Any],
    *,
    ignore_conflicts: bool,
    update_conflicts: bool,
    unique_fields: Iterable[str] | None,
    update_fields: Iterable[str] | None,
) -> Upsert | None:
    """bulk_create's conflict options, checked as Django checks them, before any SQL.

    Raises:
        ValueError: both kinds of conflict handling, or fields without `update_conflicts`.
        TypeError: a string where a list of field names belongs.
        FieldError: a field is unknown, `unique_fields` are not together unconditionally
            unique, or `update_fields` is empty or names a unique field or the primary key.
    """
    if ignore_conflicts and update_conflicts:
        raise ValueError("ignore_conflicts and update_conflicts are mutually exclusive")
    if not update_conflicts:
        if unique_fields is not None or update_fields is not None:
            raise ValueError(
                "unique_fields and update_fields only apply to update_conflicts=True; pass "
                "it to update the rows that conflict, or leave the fields out"
            )
        return None
    unique = _option_fields(model, "unique_fields", unique_fields, "['email']")
    update = _option_fields(model, "update_fields", update_fields, "['name']")
    for name in update:
        if name in unique:
            raise FieldError(
                f"update_fields names {name!r}, which is in unique_fields: a conflicting row "
                "already has that value; leave it out of update_fields"
            )
        if name in fields_of(model).primary_key:
            raise FieldError(
                f"update_fields names {name!r}, the primary key of {model.__name__}, which "
                "bulk_create never updates (rows referring to it would be orphaned); leave it "
                "out of update_fields"
            )
    check_conflict_target(model, unique)
    return Upsert(unique, update)


def _option_fields(
    model: type[Any], option: str, names: Iterable[str] | None, example: str
) -> tuple[str, ...]:
    if isinstance(names, str):
        raise TypeError(f"{option} takes a list of field names, not a string: {option}=[{names!r}]")
    fields = tuple(dict.fromkeys(names or ()))
    if not fields:
        raise FieldError(
            f"bulk_create(update_conflicts=True) needs {option} (for example {option}={example})"
        )
    check_columns(model, fields, why=f" (in {option})")
    return fields


def on_conflict_do_update(statement: Any, model: type[Any], upsert: Upsert) -> Any:
    """`statement` (a PostgreSQL or SQLite `insert(model)`) with `upsert`'s ON CONFLICT clause."""
    columns = fields_of(model).columns
    target = [columns[name].columns[0] for name in upsert.unique_fields]
    updated = [columns[name].columns[0] for name in upsert.update_fields]
    return statement.on_conflict_do_update(
        index_elements=target,
        set_={column: statement.excluded[column.key] for column in updated},
    )


_Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SendOrder:
    """The order an upsert sends its rows in, and the way back to the input order.

    Sorted by the unique fields' values: concurrent upserts of overlapping keys then lock their
    rows in the same order and cannot deadlock. Rows that cannot conflict (a unique value
    missing or NULL) go last, in input order.
    """

    names: tuple[str, ...]  # the unique fields
    keys: list[_Key | None]  # each input row's unique values; None where it cannot conflict
    order: list[int]  # input positions, in the order sent

    @classmethod
    def of(cls, rows: list[dict[str, Any]], upsert: Upsert) -> SendOrder:
        """Raises ValueError for two rows with the same unique values (before any SQL)."""
        keys = [_key_of(row.get, upsert.unique_fields) for row in rows]
        first: dict[_Key, int] = {}
        for position, key in enumerate(keys):
            if key is not None and first.setdefault(key, position) != position:
                values = zip(upsert.unique_fields, key, strict=True)
                raise ValueError(
                    f"bulk_create(update_conflicts=True) got items {first[key]} and {position} "
                    f"with the same {', '.join(f'{n}={v!r}' for n, v in values)}: a row can "
                    "be upserted once per call; merge them first"
                )
        try:
            order = sorted(
                range(len(rows)), key=lambda i: (1, i) if keys[i] is None else (0, keys[i])
            )
        except TypeError:  # values of types that do not compare: any order is still correct
            order = list(range(len(rows)))
        return cls(upsert.unique_fields, keys, order)

    def in_input_order(self, returned: list[T]) -> list[T]:
        """The objects `returned` (one per row, in the database's order), in input order.

        Matched by their unique values. A row that could not be matched (no unique values, or
        values the database stored in another form) takes the next unmatched object in the
        order rows were sent, which is the order PostgreSQL and SQLite return them in.
        """
        where: dict[_Key, int] = {}
        for position, obj in enumerate(returned):
            key = _key_of(partial(getattr, obj), self.names)
            if key is not None:
                where.setdefault(key, position)
        result: list[T | None] = [None] * len(self.keys)
        used = set()
        for row, key in enumerate(self.keys):
            if key is not None and key in where:
                result[row] = returned[where[key]]
                used.add(where[key])
        unmatched = [obj for position, obj in enumerate(returned) if position not in used]
        pending = [row for row in self.order if result[row] is None]
        for row, obj in zip(pending, unmatched, strict=True):
            result[row] = obj
        return [obj for obj in result if obj is not None]


def _key_of(get: Callable[[str], Any], names: tuple[str, ...]) -> _Key | None:
    key = tuple(get(name) for name in names)
    if any(value is None for value in key):
        return None  # missing or NULL: NULLs never conflict
    try:
        hash(key)
    except TypeError:
        return None
    return key
