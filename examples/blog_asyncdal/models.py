"""The blog's tables (authors and their posts, and the outbox's) and their repositories."""

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from asyncdal import Repository
from asyncdal.outbox import outbox_tables


class Base(DeclarativeBase): ...


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), unique=True)
    # lazy="raise": in async code a lazy load cannot happen behind your back; load on purpose.
    posts: Mapped[list["Post"]] = relationship(lazy="raise", order_by="Post.id")


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str]
    published: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Bumped by every UPDATE, which also checks it: the post's ETag.
    version: Mapped[int] = mapped_column()
    # eager_defaults: created_at comes back with the INSERT, no second query.
    __mapper_args__: dict[str, Any] = {"version_id_col": version, "eager_defaults": True}  # noqa: RUF012


# The outbox's tables join the blog's metadata, so they are created (and migrated) with it.
outbox, inbox = outbox_tables(Base.metadata)


class AuthorRepository(Repository[Author]): ...


class PostRepository(Repository[Post]):
    # Only these may appear in ?sort= and as filters; anything else is a 422.
    sortable = frozenset({"id", "title", "created_at"})
    filterable = frozenset({"author_id", "published", "title"})
    default_order = ("-created_at",)
    default_page_size = 20
