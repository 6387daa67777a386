"""FastAPI integration: lifespan, ``Depends`` providers, commit-before-response, error mapping.

One unit of work per request and database, never shared between requests or tasks. The
:class:`TransactionMiddleware` commits the request's units of work *before* the response starts,
so a failed commit becomes an error answer instead of a 2xx the client already received; a
handler that raises, or answers with a 4xx/5xx status, rolls back. asyncdal's errors become
JSON answers (503, 504, 409 naming the constraint, 422; see :func:`setup`), and every answer,
a 500 included, carries ``X-Request-ID``. The app's OpenAPI document describes those answers,
with the bodies' models exported here; :func:`error_responses` documents a route's own.

Example:
    >>> from fastapi import Depends, FastAPI
    >>> from asyncdal import Databases, load_settings
    >>> from asyncdal.fastapi import databases_lifespan, repository_provider, setup
    >>> app = FastAPI(lifespan=databases_lifespan(lambda: Databases.from_settings(load_settings())))
    >>> setup(app)
    >>> Products = Depends(repository_provider(ProductRepository))
    >>> @app.post("/products", status_code=201)
    ... async def create(body: ProductIn, products: ProductRepository = Products):
    ...     return await products.add(Product(**body.model_dump()))   # committed before the 201
"""

from asyncdal.fastapi._consistency import (
    LSN_HEADER,
    ReadYourWritesMiddleware,
    prefer_replicas,
    use_primary,
)
from asyncdal.fastapi._etag import check_if_match, etag_of
from asyncdal.fastapi._lifespan import databases_lifespan, get_databases
from asyncdal.fastapi._middleware import TransactionMiddleware
from asyncdal.fastapi._providers import (
    read_only_unit_of_work_provider,
    repository_provider,
    session_provider,
    unit_of_work_provider,
)
from asyncdal.fastapi._query import list_query
from asyncdal.fastapi._responses import (
    CommitFailed,
    ConstraintViolation,
    ErrorDetail,
    InternalError,
    InvalidRequest,
    RequestIssue,
    ServiceUnavailable,
    error_responses,
)
from asyncdal.fastapi._routers import health_router, metrics_router
from asyncdal.fastapi._setup import setup

__all__ = [
    "LSN_HEADER",
    "CommitFailed",
    "ConstraintViolation",
    "ErrorDetail",
    "InternalError",
    "InvalidRequest",
    "ReadYourWritesMiddleware",
    "RequestIssue",
    "ServiceUnavailable",
    "TransactionMiddleware",
    "check_if_match",
    "databases_lifespan",
    "error_responses",
    "etag_of",
    "get_databases",
    "health_router",
    "list_query",
    "metrics_router",
    "prefer_replicas",
    "read_only_unit_of_work_provider",
    "repository_provider",
    "session_provider",
    "setup",
    "unit_of_work_provider",
    "use_primary",
]
