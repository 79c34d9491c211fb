"""The pydantic boundary: `Page[T]`, and turning ORM objects into schemas."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, computed_field

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_MAX_PER_PAGE", "Page"]

T = TypeVar("T")
S = TypeVar("S", bound=BaseModel)

DEFAULT_MAX_PER_PAGE = 100
"""The largest `per_page` that `paginate` serves unless told otherwise."""


class Page(BaseModel, Generic[T]):
    """One page of results: a pydantic model, so `Page[UserOut]` is a response model as it is.

    `paginate` returns `Page[User]` (ORM objects); `page.map(UserOut)` turns it into
    `Page[UserOut]` after validating every item with `from_attributes`. `total` and `pages` are
    None when the page was made with `count=False`; `has_next` is exact either way (the query
    fetches one row more than the page holds). `pages` and `has_prev` are computed fields, so
    they appear in `model_dump()` and in JSON.

    Attributes:
        items: the page's items, in the query's order (at most `per_page` of them).
        page: the page's number, counted from 1.
        per_page: how many items a full page holds.
        total: how many items all the pages hold together; None when the page was made with
            `count=False`.
        has_next: whether a page follows this one.

    Examples:
        ```python
        page = uow.users.paginate(page=2, per_page=20, age__gte=18)
        return page.map(UserOut)   # Page[UserOut], serialisable by FastAPI
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, from_attributes=True)

    items: list[T]
    page: int
    per_page: int
    total: int | None = None
    has_next: bool = False

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pages(self) -> int | None:
        """How many pages there are (None when the total was not counted)."""
        if self.total is None:
            return None
        return max(1, math.ceil(self.total / self.per_page))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_prev(self) -> bool:
        """Whether a page precedes this one."""
        return self.page > 1

    def map(self, schema: type[S] | Callable[[T], S]) -> Page[S]:
        """This page with every item converted: a schema class (validated with
        `from_attributes`) or any function of one item."""
        page_class: Any
        items: list[Any]
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            items = [schema.model_validate(item, from_attributes=True) for item in self.items]
            page_class = Page[schema]  # type: ignore[valid-type]
        else:
            convert: Callable[[T], S] = schema  # type: ignore[assignment]
            items = [convert(item) for item in self.items]
            page_class = Page[Any]
        result: Page[S] = page_class(
            items=items,
            page=self.page,
            per_page=self.per_page,
            total=self.total,
            has_next=self.has_next,
        )
        return result
