"""The products API: thin handlers that validate, call the repository, and shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from sqlalchemy.exc import IntegrityError

from asyncdal import UnitOfWork
from asyncdal.fastapi import repository_provider, unit_of_work_provider
from catalog.models import Product
from catalog.repositories import ProductRepository
from catalog.schemas import ProductCreate, ProductPage, ProductRead, ProductUpdate

__all__ = ["router"]

router = APIRouter(prefix="/products", tags=["products"])

# Writes take the unit of work: the change and its outbox event commit together.
Work = Annotated[UnitOfWork, Depends(unit_of_work_provider())]
ReadProducts = Annotated[
    ProductRepository, Depends(repository_provider(ProductRepository, read_only=True))
]

_UNIQUE_VIOLATION = "23505"
# Ids are BIGINT: anything outside is a 422 here rather than a database error.
ProductId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _not_found(product_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"product {product_id} not found")


def _conflict_or_raise(error: IntegrityError) -> HTTPException:
    if getattr(error.orig, "sqlstate", None) == _UNIQUE_VIOLATION:
        return HTTPException(status.HTTP_409_CONFLICT, "a product with this sku already exists")
    raise error


@router.get("/{product_id}", response_model=ProductRead)
async def get_product(product_id: ProductId, products: ReadProducts) -> Product:
    """One product."""
    product = await products.get(product_id)
    if product is None:
        raise _not_found(product_id)
    return product


@router.get("", response_model=ProductPage)
async def list_products(
    products: ReadProducts,
    limit: Annotated[int, Query(ge=1, le=ProductRepository.max_page_size)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    sort: Annotated[
        str,
        Query(
            max_length=64,
            description="A field, or -field for descending: "
            + ", ".join(sorted(ProductRepository.sortable)),
        ),
    ] = "id",
) -> ProductPage:
    """A page of products in the order asked for."""
    items = await products.list(order_by=sort.split(","), limit=limit, offset=offset)
    total = await products.count()
    return ProductPage(
        items=[ProductRead.model_validate(item) for item in items],
        total=total,
        limit=limit,
        offset=offset,
    )


def _event_payload(product: Product) -> dict[str, object]:
    return ProductRead.model_validate(product).model_dump(mode="json")


@router.post("", response_model=ProductRead, status_code=status.HTTP_201_CREATED)
async def create_product(body: ProductCreate, uow: Work) -> Product:
    """Create a product (and a ``product.created`` event); a duplicate sku is a 409."""
    try:
        product = await uow.repository(ProductRepository).add(Product(**body.model_dump()))
    except IntegrityError as error:
        raise _conflict_or_raise(error) from None
    await uow.outbox.add("product.created", _event_payload(product), key=product.id)
    return product


@router.patch("/{product_id}", response_model=ProductRead)
async def update_product(product_id: ProductId, body: ProductUpdate, uow: Work) -> Product:
    """Change some fields of a product (and emit ``product.updated``)."""
    changes = body.model_dump(exclude_unset=True)
    try:
        product = await uow.repository(ProductRepository).update(product_id, **changes)
    except IntegrityError as error:
        raise _conflict_or_raise(error) from None
    if product is None:
        raise _not_found(product_id)
    payload = {**_event_payload(product), "changed": sorted(changes)}
    await uow.outbox.add("product.updated", payload, key=product.id)
    return product


@router.delete("/{product_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_product(product_id: ProductId, uow: Work) -> Response:
    """Delete a product (and emit ``product.deleted``)."""
    if not await uow.repository(ProductRepository).delete(product_id):
        raise _not_found(product_id)
    await uow.outbox.add("product.deleted", {"id": product_id}, key=product_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
