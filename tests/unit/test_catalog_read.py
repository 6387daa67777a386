"""The catalog shows a product from the values it holds, or reads it the usual way."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy
from sqlalchemy.orm import Session

from catalog.models import Product
from catalog.routes import _read
from catalog.schemas import ProductRead

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _product() -> Product:
    return Product(
        id=7,
        sku="SKU-7",
        name="seven",
        price=Decimal("7.25"),
        category_id=None,
        created_at=WHEN,
        updated_at=WHEN,
    )


def test_a_product_holding_every_value_is_shown_as_from_its_attributes() -> None:
    product = _product()
    assert _read(product) == ProductRead.model_validate(product)
    assert _read(product).model_dump() == {
        "id": 7,
        "sku": "SKU-7",
        "name": "seven",
        "price": Decimal("7.25"),
        "category_id": None,
        "category": None,
        "created_at": WHEN,
        "updated_at": WHEN,
    }


def test_a_product_missing_a_value_is_read_the_usual_way() -> None:
    engine = sqlalchemy.create_engine("sqlite://")
    Product.__table__.create(engine)  # type: ignore[attr-defined]
    with Session(engine, expire_on_commit=False) as session:
        session.add(_product())
        session.commit()
        product = session.get(Product, 7)
        assert product is not None
        session.expire(product, ["name"])
        assert "name" not in vars(product)
        # The name is loaded through the ORM's attribute, not found missing.
        assert _read(product).name == "seven"
    engine.dispose()
