"""Request and response bodies of the products API."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CategoryRead", "ProductCreate", "ProductPage", "ProductRead", "ProductUpdate"]

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Price = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
CategoryId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class ProductCreate(BaseModel):
    """A new product."""

    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: Name
    price: Price
    category_id: CategoryId | None = None


class ProductUpdate(BaseModel):
    """Changes to a product; fields left out stay as they are, and none may be null."""

    model_config = ConfigDict(extra="forbid")

    sku: Sku | None = None
    name: Name | None = None
    price: Price | None = None
    category_id: CategoryId | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(key for key, value in data.items() if value is None)
            if nulls:
                raise ValueError(f"fields may not be null: {', '.join(nulls)}")
        return data


class ProductRead(BaseModel):
    """A product as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    sku: str
    name: str
    price: Decimal
    category_id: int | None = None
    category: str | None = None
    """The category's name, from the reference database."""
    created_at: datetime
    updated_at: datetime


class ProductPage(BaseModel):
    """One page of products, with the total count for the same filters."""

    items: list[ProductRead]
    total: int
    limit: int
    offset: int


class CategoryRead(BaseModel):
    """A category as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
