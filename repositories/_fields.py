"""What a mapped class has: its fields, read once from the mapper and cached.

Repository, Query, the lookups and bulk work all ask here which names a model has, and all
refuse an unknown one with the same message, before any SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from sqlalchemy import inspect
from sqlalchemy.orm import ColumnProperty, Mapper, RelationshipProperty

from repositories.errors import FieldError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "Fields",
    "check_columns",
    "check_fields",
    "fields_of",
    "mapper_of",
    "model_fields",
    "unknown_field",
]


@dataclass(frozen=True, slots=True)
class Fields:
    """The names a mapped class has, by kind."""

    columns: Mapping[str, ColumnProperty[Any]]
    relationships: Mapping[str, RelationshipProperty[Any]]
    # Column name -> the Python type its values have (None when the type does not say).
    # Cached: reading `Model.attr.type.python_type` costs microseconds on every lookup.
    python_types: Mapping[str, type[Any] | None]
    primary_key: tuple[str, ...]  # attribute names, in the mapper's primary key order

    @property
    def names(self) -> list[str]:
        """Every column and relationship name, sorted."""
        return sorted(self.columns.keys() | self.relationships.keys())


def mapper_of(model: type[Any]) -> Mapper[Any]:
    """The mapper of `model`.

    Raises:
        TypeError: `model` is not a mapped SQLAlchemy class.
    """
    mapper = inspect(model, raiseerr=False)
    if not isinstance(mapper, Mapper):
        raise TypeError(f"{model!r} is not a mapped SQLAlchemy class")
    return mapper


_cache: WeakKeyDictionary[type[Any], Fields] = WeakKeyDictionary()


def fields_of(model: type[Any]) -> Fields:
    """The fields of `model`, read from its mapper on first use."""
    fields = _cache.get(model)
    if fields is None:
        mapper = mapper_of(model)
        columns = {p.key: p for p in mapper.attrs if isinstance(p, ColumnProperty)}
        relationships = {p.key: p for p in mapper.attrs if isinstance(p, RelationshipProperty)}
        python_types = {key: _python_type(p.columns[0].type) for key, p in columns.items()}
        primary_key = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        fields = _cache[model] = Fields(columns, relationships, python_types, primary_key)
    return fields


def _python_type(type_: Any) -> type[Any] | None:
    try:
        python_type: type[Any] = type_.python_type
    except NotImplementedError:
        return None
    return python_type


def unknown_field(
    model: type[Any], name: str, *, columns_only: bool = False, why: str = ""
) -> FieldError:
    """The one error for a name `model` does not have: it names the valid choices.

    Args:
        model: the mapped class.
        name: the unknown name.
        columns_only: only columns were acceptable (values to write), not relationships.
        why: words placed after the name, e.g. " (in Post, reached through 'author__x')".
    """
    fields = fields_of(model)
    kind = "column" if columns_only else "field"
    valid = sorted(fields.columns) if columns_only else fields.names
    return FieldError(
        f"{model.__name__} has no {kind} {name!r}{why}; valid {kind}s: {', '.join(valid)}"
    )


def model_fields(model: type[Any]) -> list[str]:
    """The attribute names of `model` that lookups and values may use, sorted."""
    return fields_of(model).names


def check_fields(model: type[Any], names: Iterable[str]) -> None:
    """Raise `FieldError` if any of `names` is not a mapped attribute of `model`."""
    fields = fields_of(model)
    for name in names:
        if name not in fields.columns and name not in fields.relationships:
            raise unknown_field(model, name)


def check_columns(model: type[Any], names: Iterable[str], *, why: str = "") -> None:
    """Raise `FieldError` if any of `names` is not a column attribute of `model`."""
    fields = fields_of(model)
    for name in names:
        if name not in fields.columns:
            raise unknown_field(model, name, columns_only=True, why=why)
