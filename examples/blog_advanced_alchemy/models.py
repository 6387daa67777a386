"""The blog's tables (authors, their posts, and the events written with them) and services."""

from typing import Any

from advanced_alchemy.base import BigIntAuditBase, BigIntBase
from advanced_alchemy.extensions.fastapi import repository, service
from sqlalchemy import ForeignKey, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship


class Author(BigIntBase):
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), unique=True)
    posts: Mapped[list["Post"]] = relationship(lazy="raise", order_by="Post.id")


class Post(BigIntAuditBase):
    author_id: Mapped[int] = mapped_column(ForeignKey("author.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str]
    published: Mapped[bool] = mapped_column(default=False)
    # Bumped by every UPDATE, which also checks it: the post's ETag.
    version: Mapped[int] = mapped_column()
    __mapper_args__: dict[str, Any] = {"version_id_col": version}  # noqa: RUF012


class Event(BigIntAuditBase):
    """An event for other services, written in the transaction of the change it tells of."""

    type: Mapped[str]
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)


class AuthorService(service.SQLAlchemyAsyncRepositoryService[Author]):
    class Repo(repository.SQLAlchemyAsyncRepository[Author]):
        model_type = Author

    repository_type = Repo


class PostService(service.SQLAlchemyAsyncRepositoryService[Post]):
    class Repo(repository.SQLAlchemyAsyncRepository[Post]):
        model_type = Post

    repository_type = Repo
