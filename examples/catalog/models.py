"""The catalog's tables."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Integer,
    MetaData,
    Numeric,
    String,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdal.outbox._table import outbox_tables

__all__ = ["Base", "Category", "IdempotencyKey", "Product", "ReferenceBase", "inbox", "outbox"]


# Deterministic constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of the main database's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ReferenceBase(DeclarativeBase):
    """Declarative base of the reference database's tables (its own server and migrations)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Category(ReferenceBase):
    """A product category; lives in the reference database."""

    __tablename__ = "categories"
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


class Product(Base):
    """A product for sale."""

    __tablename__ = "products"
    __table_args__ = (CheckConstraint("price >= 0", name="price_not_negative"),)
    # Server-made values (ids, timestamps) come back with RETURNING, so reading them after a
    # flush never needs a lazy load, which async code cannot do.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    # A category id in the reference database: another server, so no foreign key; the API
    # checks that it exists.
    category_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class IdempotencyKey(Base):
    """The first answer to a request sent with an ``Idempotency-Key`` header.

    Claimed (inserted) in the same transaction as the work it guards, so the key and the work
    are committed together or not at all; a retry with the same key gets this answer back.
    """

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 of the method, path and body: the same key with another request is refused."""
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# The outbox commits with the products, so its tables live in the same database and migrations.
outbox, inbox = outbox_tables(Base.metadata)
