"""The products API: thin handlers that validate, call the repository, and shape the answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from asyncdal.fastapi import repository_provider
from catalog.idempotency import IdempotencyKeys, KeyReusedError, request_hash
from catalog.models import Product
from catalog.repositories import ProductRepository
from catalog.schemas import ProductCreate, ProductPage, ProductRead, ProductUpdate

__all__ = ["router"]

router = APIRouter(prefix="/products", tags=["products"])

Products = Annotated[ProductRepository, Depends(repository_provider(ProductRepository))]
Keys = Annotated[IdempotencyKeys, Depends(repository_provider(IdempotencyKeys))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Retry-safe writes: a retry with the same key returns the first answer.",
    ),
]
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


@router.post("", response_model=ProductRead, status_code=status.HTTP_201_CREATED)
async def create_product(
    body: ProductCreate, products: Products, keys: Keys, idempotency_key: IdempotencyKey = None
) -> Product | JSONResponse:
    """Create a product; a duplicate sku is a 409. With an ``Idempotency-Key`` header, a retry
    with the same key and body returns the first answer instead of creating a second row."""
    if idempotency_key is not None:
        fingerprint = request_hash("POST", "/products", body.model_dump_json().encode())
        try:
            stored = await keys.claim(idempotency_key, fingerprint)
        except KeyReusedError as error:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
        if stored is not None and stored.status_code is not None:
            return JSONResponse(
                stored.response,
                status_code=stored.status_code,
                headers={"Idempotent-Replayed": "true"},
            )
    try:
        product = await products.add(Product(**body.model_dump()))
    except IntegrityError as error:
        raise _conflict_or_raise(error) from None
    if idempotency_key is not None:
        answer = ProductRead.model_validate(product).model_dump(mode="json")
        await keys.record(idempotency_key, status.HTTP_201_CREATED, answer)
    return product


@router.patch("/{product_id}", response_model=ProductRead)
async def update_product(product_id: ProductId, body: ProductUpdate, products: Products) -> Product:
    """Change some fields of a product."""
    try:
        product = await products.update(product_id, **body.model_dump(exclude_unset=True))
    except IntegrityError as error:
        raise _conflict_or_raise(error) from None
    if product is None:
        raise _not_found(product_id)
    return product


@router.delete("/{product_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_product(product_id: ProductId, products: Products) -> Response:
    """Delete a product."""
    if not await products.delete(product_id):
        raise _not_found(product_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
