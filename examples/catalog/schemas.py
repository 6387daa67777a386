"""Request and response bodies of the products API."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "PRICE_PATTERN",
    "CategoryRead",
    "ProductCreate",
    "ProductPage",
    "ProductRead",
    "ProductUpdate",
]

# The patterns are what the OpenAPI document says and what the service takes, both: pydantic
# checks them with Rust's regex, where "$" ends the text (Python's would allow a newline).
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
# PostgreSQL's text cannot hold a NUL character: refused here, it is a 422 naming the field.
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


def _json_integer(value: Any) -> Any:
    """Refuse what pydantic's lax ``int`` would turn into one but the document's ``"type":
    "integer"`` does not take: ``true`` and ``false``, and text such as ``"5"``. A JSON
    number with no fraction (``5.0``) is an integer to JSON Schema, so it stays taken."""
    if isinstance(value, bool | str):
        kind = "a boolean" if isinstance(value, bool) else "a string"
        raise PydanticCustomError("int_type", f"Input should be a valid integer, not {kind}")
    return value


# Within what a JSON number carries exactly (2**53 - 1, as I-JSON advises): FastAPI writes a
# body's bounds as floats, and a bound past 2**53 would not say exactly what is taken.
CategoryId = Annotated[int, Field(ge=1, le=2**53 - 1), BeforeValidator(_json_integer)]

PRICE_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"
"""A price as text: up to 10 digits, then a point and one or two decimals (NUMERIC(12, 2))."""
_PRICE_TEXT = re.compile(PRICE_PATTERN.removeprefix("^").removesuffix("$"))
_LARGEST_PRICE = 9999999999.99


def _price_text(value: Any) -> Any:
    """Refuse a price string the pattern does not match: pydantic's ``Decimal`` alone would
    also take ``"1e2"``, ``" 5"`` or ``"1_000"``, which the document cannot describe."""
    if isinstance(value, str) and _PRICE_TEXT.fullmatch(value) is None:
        raise ValueError(
            "a price is a number, or a text like 24.50: up to 10 digits, then a point and "
            "one or two decimals"
        )
    return value


Price = Annotated[
    Decimal,
    BeforeValidator(_price_text),
    Field(ge=0, max_digits=12, decimal_places=2),
    # A JSON number is taken as written (0.07 is 0.07), so multipleOf 0.01 holds exactly for
    # what pydantic takes: no more than two decimals.
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PRICE_PATTERN},
                {
                    "type": "number",
                    "minimum": 0,
                    "maximum": _LARGEST_PRICE,
                    "multipleOf": 0.01,
                },
            ],
            "examples": ["24.50"],
        }
    ),
]


class ProductCreate(BaseModel):
    """A new product."""

    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: Name
    price: Price
    category_id: CategoryId | None = None


def _no_nulls_in_the_document(schema: dict[str, Any]) -> None:
    """Show no null in the document: not as a default (a field left out stays as it is), nor
    as a value to send (a null sent is refused, see ``_no_nulls``)."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]
        options = field.get("anyOf", [])
        if {"type": "null"} in options:
            del field["anyOf"]
            (value,) = [option for option in options if option != {"type": "null"}]
            field.update(value)


class ProductUpdate(BaseModel):
    """Changes to a product; fields left out stay as they are, and none may be null."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_nulls_in_the_document)

    # None is only the default (left out): a null sent is refused below, and the document
    # shows none. ``X | None``, not a union with ``SkipJsonSchema[None]``: pydantic checks it
    # as "X or null", so an error's loc is the field's name alone (a union's added the
    # validator's internal name, ``function-before[...]``, as a third part).
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
