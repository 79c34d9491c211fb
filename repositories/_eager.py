"""Eager loading for `Query`: Django's `select_related` and `prefetch_related` as SQLAlchemy
loader options, checked before any SQL.

`select_related("author__publisher")` follows many-to-one and one-to-one relationships in the
query's own SELECT (`joinedload`: a LEFT OUTER JOIN per step, so a row whose key is NULL is
kept). `prefetch_related("posts__comments")` loads any relationship with one more SELECT per
step (`selectinload`: `WHERE key IN (...)` over the objects just loaded), however many rows
there are. A step that both name (`select_related("author")` with
`prefetch_related("author__posts")`) is joined, as Django reuses the join.

A query keeps its loads as `(kind, path)` pairs, which name the statement's shape (see
`Query._kept`), and raw loader options as the objects given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.orm import Load, joinedload, selectinload
from sqlalchemy.sql.base import ExecutableOption

from repositories._fields import fields_of, mapper_of
from repositories.errors import FieldError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import RelationshipProperty

__all__ = ["Kind", "check_options", "check_paths", "loader_options"]

Kind = Literal["select", "prefetch"]

# Relationships whose attribute is a query, never a loaded collection: no loader option applies.
_NOT_LOADABLE = frozenset({"dynamic", "write_only"})


def check_paths(model: type[Any], kind: Kind, names: Iterable[Any]) -> tuple[str, ...]:
    """The relationship paths `names` (`"author__publisher"`), each checked step by step.

    Raises:
        TypeError: a name is not a string.
        FieldError: a step is not a relationship of the model it starts from; for
            `select_related`, a step is a collection.
    """
    method = f"{kind}_related"
    paths: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise TypeError(
                f"{method}() takes relationship names such as 'author' or 'author__publisher', "
                f"not {type(name).__name__}; pass loader options to options()"
            )
        current = model
        for step in name.split("__"):
            relationship = _relationship(current, step, name, method)
            if kind == "select" and relationship.uselist:
                where = "" if step == name else f" (reached through {name!r})"
                raise FieldError(
                    f"{current.__name__}.{step} is a collection{where}; select_related() follows "
                    f"many-to-one and one-to-one relationships in one JOIN: use "
                    f'prefetch_related("{name}"), which loads it with one more SELECT'
                )
            current = relationship.mapper.class_
        paths.append(name)
    return tuple(paths)


def _relationship(model: type[Any], step: str, path: str, method: str) -> RelationshipProperty[Any]:
    fields = fields_of(model)
    relationship = fields.relationships.get(step)
    where = "" if step == path else f" (reached through {path!r})"
    if relationship is None:
        problem = (
            f"{model.__name__}.{step} is a column, not a relationship"
            if step in fields.columns
            else f"{model.__name__} has no relationship {step!r}"
        )
        valid = ", ".join(sorted(fields.relationships)) or "none"
        raise FieldError(
            f"{problem}{where}; {method}() follows relationships, and {model.__name__}'s are: "
            f"{valid}"
        )
    if relationship.lazy in _NOT_LOADABLE:
        raise FieldError(
            f"{model.__name__}.{step}{where} is a {relationship.lazy} relationship, which is "
            "never loaded into the attribute: query it instead"
        )
    return relationship


def check_options(model: type[Any], options: Iterable[Any]) -> tuple[ExecutableOption, ...]:
    """The raw SQLAlchemy options given to `Query.options`, checked.

    Raises:
        TypeError: an argument is not a SQLAlchemy option (a relationship name, say).
        FieldError: a loader option starts from another model than the query's.
    """
    checked: list[ExecutableOption] = []
    mapper = mapper_of(model)
    for option in options:
        if not isinstance(option, ExecutableOption):
            raise TypeError(
                f"options() takes SQLAlchemy loader options such as selectinload(User.posts), "
                f"not {type(option).__name__}; for relationship names use "
                "prefetch_related('posts') or select_related('author')"
            )
        root = getattr(option.path[0], "mapper", None) if isinstance(option, Load) else None
        if root is not None and not (mapper.isa(root) or root.isa(mapper)):
            # SQLAlchemy would say so too, but only when the statement is compiled.
            raise FieldError(
                f"options(): {option} starts from {root.class_.__name__}, but this query loads "
                f"{model.__name__}; start it from a {model.__name__} relationship, e.g. "
                f"selectinload({model.__name__}.<relationship>)"
            )
        checked.append(option)
    return tuple(checked)


def loader_options(model: type[Any], loads: tuple[Any, ...]) -> list[ExecutableOption]:
    """The statement options of a query's loads: `(kind, path)` pairs and raw options."""
    named = [load for load in loads if isinstance(load, tuple)]
    joined = {
        "__".join(path.split("__")[: index + 1])
        for kind, path in named
        if kind == "select"
        for index in range(path.count("__") + 1)
    }
    paths = dict.fromkeys(path for _, path in named)
    options: list[ExecutableOption] = []
    for path in paths:
        if any(other.startswith(f"{path}__") for other in paths):
            continue  # a longer path loads this one on its way
        options.append(_chain(model, path, joined))
    options.extend(load for load in loads if not isinstance(load, tuple))
    return options


def _chain(model: type[Any], path: str, joined: set[str]) -> ExecutableOption:
    """`joinedload(A.b).selectinload(B.c)...` for `path`, each step joined when some
    select_related path goes through it."""
    first, *rest = path.split("__")
    option = (joinedload if first in joined else selectinload)(getattr(model, first))
    current = fields_of(model).relationships[first].mapper.class_
    prefix = first
    for step in rest:
        prefix = f"{prefix}__{step}"
        attribute = getattr(current, step)
        join = prefix in joined
        option = option.joinedload(attribute) if join else option.selectinload(attribute)
        current = fields_of(current).relationships[step].mapper.class_
    return option
