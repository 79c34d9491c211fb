"""The pydantic schemas at the edges: what comes in, what goes out."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator


class UserIn(BaseModel):
    email: str = Field(min_length=3, max_length=200, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(min_length=1, max_length=100)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str


class PostIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    body: str = ""


class PostOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    body: str
    author_id: int
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        # SQLite keeps no time zone; the blog stores UTC, so a naive time read back is UTC.
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class PostDetail(PostOut):
    """A post with its author nested, as a feed shows it.

    Validating it reads `post.author`: load the authors with the posts
    (`select_related("author")`), or each post of a page costs one more SELECT.
    """

    author: UserOut
