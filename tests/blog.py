"""A small blog (authors and posts) for the repository's contract suite and the CRUD API tests.

Its columns cover what the repository has to get right: NULLs (``nickname``, ``slug``,
``rating``, ``published_on``), Python-side defaults (``karma``, ``status``, ``token``), server
defaults (``created_at``, ``updated_at`` with an ``onupdate``), named unique constraints, a
version column, and relationships that refuse lazy loads.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    MetaData,
    Numeric,
    String,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from asyncdal import Repository

__all__ = ["Author", "AuthorRepository", "Base", "Post", "PostRepository"]


class Base(DeclarativeBase):
    """The blog's tables."""

    metadata = MetaData()


class Author(Base):
    """Someone who writes posts."""

    __tablename__ = "authors"
    __table_args__ = (UniqueConstraint("email", name="uq_authors_email"),)
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    # The C collation: text sorts by code point there and in the in-memory fake alike.
    nickname: Mapped[str | None] = mapped_column(String(100, collation="C"))
    karma: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    posts: Mapped[list[Post]] = relationship(back_populates="author", lazy="raise")


class Post(Base):
    """A post, versioned for optimistic concurrency."""

    __tablename__ = "posts"
    __table_args__ = (UniqueConstraint("slug", name="uq_posts_slug"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    title: Mapped[str] = mapped_column(String(200, collation="C"))
    slug: Mapped[str | None] = mapped_column(String(100, collation="C"))
    rating: Mapped[Decimal | None] = mapped_column(Numeric(4, 1))
    published_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20), default="draft")
    token: Mapped[uuid.UUID] = mapped_column(Uuid, default=uuid.uuid4)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    author: Mapped[Author] = relationship(back_populates="posts", lazy="raise")

    __mapper_args__: dict[str, Any] = {  # noqa: RUF012
        "version_id_col": version,
        "eager_defaults": True,
    }


class AuthorRepository(Repository[Author]):
    """Authors, with a method of the application's own written with the public methods."""

    sortable = frozenset({"id", "name", "nickname", "karma", "created_at"})
    filterable = frozenset({"email", "name", "nickname", "karma", "created_at"})

    async def by_email(self, email: str) -> Author | None:
        """The author with this email (runs on the in-memory fake too)."""
        found = await self.list(filters={"email": email}, limit=1)
        return found[0] if found else None

    async def raw_count(self) -> int:
        """Counts with the session itself: the fake refuses it, naming this method."""
        from sqlalchemy import select

        return int(await self.session.scalar(select(func.count()).select_from(Author)) or 0)


class PostRepository(Repository[Post]):
    """Posts: every column a client may filter or sort on."""

    sortable = frozenset({"id", "title", "slug", "rating", "published_on", "updated_at"})
    filterable = frozenset(
        {"title", "slug", "rating", "published_on", "status", "author_id", "token"}
    )
    default_page_size = 10
    max_page_size = 50
