"""Quickstart: a unit of work with typed repositories, on an embedded SQLite file.

Run it with `make demo`, or `python examples/quickstart.py [DATABASE_URL]`.
It creates the tables, then runs a few units of work and says what each one did.
"""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from repositories import Repository
from uow import Database, UnitOfWork


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    posts: Mapped[list[Post]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")


class PostIn(BaseModel):
    title: str
    author_id: int


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str


class UserRepository(Repository[User]):
    def by_email(self, email: str) -> User | None:
        return self.first(email=email)


class AppUnitOfWork(UnitOfWork):
    users: UserRepository
    posts: Repository[Post]


def main(url: str = "sqlite:///quickstart.db") -> None:
    db = Database(url)
    db.create_all(Base.metadata)
    print(f"Created the tables in {url}.")
    uow = AppUnitOfWork(db)

    with uow:
        ada = uow.users.first_or_create(email="ada@example.com", defaults={"name": "Ada"})
        uow.posts.create(PostIn(title="Hello", author_id=ada.id))
        uow.on_commit(lambda: print("on_commit: the first unit of work has committed."))
        print(f"first_or_create made user #{ada.id} ({ada.email}) and wrote a post.")

    with uow:
        again = uow.users.first_or_create(email="ada@example.com", defaults={"name": "Other"})
        print(f"first_or_create again found user #{again.id}, name still {again.name!r}.")

    with uow:
        uow.users.create(email="grace@example.com", name="Grace")
        try:
            with uow:  # nested: a SAVEPOINT
                uow.users.create(email="linus@example.com", name="Linus")
                raise RuntimeError("something went wrong in the nested block")
        except RuntimeError as error:
            print(f"The nested block failed ({error}) and rolled back to its savepoint.")
        uow.on_commit(lambda: print("on_commit: the outer block committed Grace."))

    with uow:
        emails = [user.email for user in uow.users.all()]
        posts = uow.posts.count()
    print(f"The database now holds {len(emails)} users ({', '.join(emails)}) and {posts} post.")
    print("Linus is absent: only the savepoint rolled back, the outer work committed.")

    # Objects stay readable after their block (expire_on_commit=False): pydantic out.
    print(f"Out as a schema after the block: {UserOut.model_validate(ada).model_dump()}")
    db.dispose()


if __name__ == "__main__":
    main(*sys.argv[1:2])
