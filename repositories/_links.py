"""Related objects set on the model instances given to `bulk_create`.

A flush turns `Post(author=ada)` into `author_id = ada.id`; a bulk INSERT sees only columns. So
for each many-to-one set on an instance, the foreign key is copied from the related object once
it has its key, and the instance is taken back out of the related object's collection, where the
backref put it: the instance itself is never added to the session (the new rows come back as new
objects), and a flush would otherwise warn about it and leave the collection wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.orm import RelationshipDirection
from sqlalchemy.orm.attributes import set_committed_value

from repositories.errors import FieldError

if TYPE_CHECKING:
    from sqlalchemy.orm import Mapper, RelationshipProperty, Session


@dataclass(frozen=True)
class Link:
    """`row` (built from `item`) refers to `related` through the many-to-one `prop`."""

    row: dict[str, Any]
    item: Any
    prop: RelationshipProperty[Any]
    related: Any


def links_of(mapper: Mapper[Any], item: Any, row: dict[str, Any]) -> list[Link]:
    """The many-to-ones set on `item`; a `FieldError` for related objects it cannot save."""
    state = item.__dict__
    links = []
    for prop in mapper.relationships:
        if prop.viewonly:  # a flush ignores these too
            continue
        value = state.get(prop.key)
        if value is None or (prop.uselist and len(value) == 0):
            continue
        where = f"{mapper.class_.__name__}.{prop.key}"
        if prop.direction is not RelationshipDirection.MANYTOONE:
            raise FieldError(
                f"bulk_create inserts rows of {mapper.class_.__name__} only, not the related "
                f"objects in {where}; create them after, with their foreign keys set"
            )
        related = inspect(value)
        if related.session is None and None in related.mapper.primary_key_from_instance(value):
            raise FieldError(
                f"{where} refers to a {related.mapper.class_.__name__} with no primary key "
                "that is not in the session; add it to the session or create it first"
            )
        links.append(Link(row, item, prop, value))
    return links


def _reverse_keys(prop: RelationshipProperty[Any]) -> list[str]:
    # The backref side (`User.posts` for `Post.author`), where setting the many-to-one put
    # the instance. SQLAlchemy keeps the pairing in this attribute; it has no public name.
    return [reverse.key for reverse in prop._reverse_property]


def _collections(links: list[Link]) -> dict[tuple[int, str], tuple[Any, set[int]]]:
    """Each (related object, backref collection) once, with the ids of its instances."""
    grouped: dict[tuple[int, str], tuple[Any, set[int]]] = {}
    for link in links:
        for key in _reverse_keys(link.prop):
            entry = grouped.setdefault((id(link.related), key), (link.related, set()))
            entry[1].add(id(link.item))
    return grouped


def detach(session: Session, links: list[Link]) -> None:
    """Take the instances out of their related objects' collections, before the flush.

    Each (related object, collection) is handled once, whatever the number of instances.
    """
    for (_, key), (related, items) in _collections(links).items():
        state = inspect(related)
        if state.persistent and state.session is session:
            # Drops the pending appends (loaded or not) without loading the collection.
            session.expire(related, [key])
        elif key in state.dict:
            # A pending or detached object: its collection is all in memory. Set it without
            # the instances and without events, so the instances keep their own attributes.
            value = state.dict[key]
            if isinstance(value, list | set):
                kept: Any = type(value)(x for x in value if id(x) not in items)
            elif isinstance(value, dict):
                kept = {k: v for k, v in value.items() if id(v) not in items}
            else:
                kept = None if id(value) in items else value
            set_committed_value(related, key, kept)


def fill_foreign_keys(links: list[Link]) -> None:
    """Copy each related object's key into its row (after the flush gave it one)."""
    for link in links:
        mapper = inspect(link.item).mapper
        related_mapper = inspect(link.related).mapper
        for local, remote in link.prop.local_remote_pairs:
            value = getattr(link.related, related_mapper.get_property_by_column(remote).key)
            if value is None:
                raise FieldError(
                    f"{mapper.class_.__name__}.{link.prop.key} refers to a "
                    f"{related_mapper.class_.__name__} with no primary key after the flush"
                )
            link.row[mapper.get_property_by_column(local).key] = value


def expire_collections(session: Session, links: list[Link]) -> None:
    """Reload the related objects' collections on next access: they now hold the new rows."""
    for (_, key), (related, _items) in _collections(links).items():
        if inspect(related).session is session:
            session.expire(related, [key])
