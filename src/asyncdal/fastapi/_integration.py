"""FastAPI integration: lifespan, ``Depends`` providers, commit-before-response, error mapping.

One unit of work per request and database, never shared between requests or tasks. The
:class:`TransactionMiddleware` commits the request's units of work *before* the response starts,
so a failed commit becomes a 500 instead of a 2xx the client already received; a handler that
raises, or answers with a 4xx/5xx status, rolls back.

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

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asyncdal._translate import LOCK_NOT_AVAILABLE, QUERY_CANCELED, is_conflict, sqlstate
from asyncdal.errors import (
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    InvalidQueryError,
    NotCommittedError,
    QueryTimeoutError,
    UnitOfWorkError,
)
from asyncdal.fastapi._consistency import ReadYourWritesMiddleware
from asyncdal.observe._health import check_health
from asyncdal.observe._request_id import RequestIdMiddleware
from asyncdal.orm._database import Database
from asyncdal.orm._databases import Databases
from asyncdal.orm._uow import UnitOfWork

__all__ = [
    "TransactionMiddleware",
    "databases_lifespan",
    "get_databases",
    "health_router",
    "metrics_router",
    "read_only_unit_of_work_provider",
    "repository_provider",
    "session_provider",
    "setup",
    "unit_of_work_provider",
]

if TYPE_CHECKING:
    from asyncdal.observe._metrics import DatabaseMetrics

logger = logging.getLogger("asyncdal.fastapi")

R = TypeVar("R")

_SCOPE_KEY = "asyncdal.units_of_work"
_STATE_KEY = "databases"

Lifespan = Callable[[FastAPI], Any]


def databases_lifespan(
    build: Callable[[], Databases | Awaitable[Databases]],
    *,
    warm_up: bool = True,
    metrics: DatabaseMetrics | None = None,
) -> Lifespan:
    """A FastAPI lifespan that builds the databases, warms them up, and disposes them.

    The registry (and the metrics) go in the lifespan state, where :func:`get_databases` and
    :func:`metrics_router` find them.

    Args:
        build: returns (or returns an awaitable of) the :class:`Databases` to serve.
        warm_up: open and check the pools at startup (turn off on AWS Lambda).
        metrics: instrument every database with these metrics.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        built = build()
        databases = await built if inspect.isawaitable(built) else built
        try:
            if metrics is not None:
                for database in databases.values():
                    metrics.instrument(database)
            if warm_up:
                await databases.warm_up()
            yield {_STATE_KEY: databases, "metrics": metrics}
        finally:
            await databases.dispose()

    return lifespan


def get_databases(request: Request) -> Databases:
    """The :class:`Databases` of the running app (a FastAPI dependency)."""
    databases = getattr(request.state, _STATE_KEY, None)
    if not isinstance(databases, Databases):
        raise UnitOfWorkError(
            "no databases in the app's lifespan state: use asyncdal.fastapi.databases_lifespan "
            "(or yield {'databases': ...} from your lifespan)"
        )
    return databases


def _register(request: Request, uow: UnitOfWork) -> None:
    units: list[UnitOfWork] | None = request.scope.get(_SCOPE_KEY)
    if units is None:
        raise UnitOfWorkError(
            "asyncdal.fastapi.TransactionMiddleware is not installed: call "
            "asyncdal.fastapi.setup(app) so request units of work commit before the response"
        )
    if not uow.joined:
        units.append(uow)


@asynccontextmanager
async def _request_unit_of_work(
    request: Request, database: str, *, read_only: bool, snapshot: bool = False
) -> AsyncIterator[UnitOfWork]:
    db: Database = get_databases(request)[database]
    uow = db.read_only_unit_of_work(snapshot=snapshot) if read_only else db.unit_of_work()
    async with uow:
        _register(request, uow)
        yield uow
        if uow in request.scope[_SCOPE_KEY]:
            # Torn down before the response started (``Depends(..., scope="function")``):
            # closing now would roll back work the response is about to report as done.
            raise UnitOfWorkError(
                "a request unit of work was closed before the response started; "
                "asyncdal's providers need the default Depends scope ('request')"
            )


def unit_of_work_provider(
    database: str = "main",
) -> Callable[[Request], AsyncIterator[UnitOfWork]]:
    """A dependency giving the request's read-write unit of work on ``database``.

    It is committed before the response when the status is below 400, else rolled back.
    """

    async def provide(request: Request) -> AsyncIterator[UnitOfWork]:
        async with _request_unit_of_work(request, database, read_only=False) as uow:
            yield uow

    return provide


def read_only_unit_of_work_provider(
    database: str = "main", *, snapshot: bool = False
) -> Callable[[Request], AsyncIterator[UnitOfWork]]:
    """A dependency giving a read-only unit of work (see ``Database.read_only_unit_of_work``)."""

    async def provide(request: Request) -> AsyncIterator[UnitOfWork]:
        async with _request_unit_of_work(
            request, database, read_only=True, snapshot=snapshot
        ) as uow:
            yield uow

    return provide


def session_provider(database: str = "main") -> Callable[[Request], AsyncIterator[AsyncSession]]:
    """A dependency giving the ``AsyncSession`` of the request's unit of work on ``database``."""

    async def provide(request: Request) -> AsyncIterator[AsyncSession]:
        async with _request_unit_of_work(request, database, read_only=False) as uow:
            yield uow.session

    return provide


def repository_provider(
    repository_class: Callable[[AsyncSession], R],
    *,
    database: str = "main",
    read_only: bool = False,
) -> Callable[[Request], AsyncIterator[R]]:
    """A dependency giving a repository bound to the request's unit of work.

    Args:
        repository_class: the :class:`~asyncdal.repository.Repository` subclass.
        database: the named database.
        read_only: use a read-only unit of work (for endpoints that only read).
    """

    async def provide(request: Request) -> AsyncIterator[R]:
        async with _request_unit_of_work(request, database, read_only=read_only) as uow:
            yield uow.repository(repository_class)

    return provide


class TransactionMiddleware:
    """Commit the request's units of work when the response starts, or roll them back.

    A pure ASGI middleware (no ``BaseHTTPMiddleware`` overhead). Status below 400: commit;
    if the commit fails, the client gets a 500 and the request's background tasks do not run.
    Status 400 or above: roll back. Units of work on several databases commit one after the
    other: there is no atomic commit across databases, and the 500 says which ones committed.

    Once settled, the sessions are closed, so their connections go back to the pool before
    the body is sent and before background tasks run. Writes made while a streaming response
    sends its body come after this commit and are rolled back; do them before returning.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        units: list[UnitOfWork] = []
        scope[_SCOPE_KEY] = units
        replaced = False

        async def send_after_commit(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the app's own body belongs to a response we replaced
            if message["type"] == "http.response.start" and units:
                # A handler that raised has had its units of work closed (rolled back) already.
                pending = [uow for uow in units if uow.is_open]
                units.clear()
                for uow in pending:
                    uow.seal()
                if message["status"] < 400:
                    failure = await _commit_all(pending)
                    if failure is not None:
                        replaced = True
                        await _send_commit_failure(send, *failure)
                        # Stop the app here: its background tasks must not run for a
                        # response that failed.
                        raise _CommitFailedError
                else:
                    for uow in pending:
                        await uow.rollback()
                # Settled: give the connections back before the body is sent and before any
                # background task runs, instead of after both.
                for uow in pending:
                    await uow.session.close()
            await send(message)

        # An unhandled exception propagates as usual; the dependencies' teardown closes (and so
        # rolls back) every unit of work of the request.
        with suppress(_CommitFailedError):
            await self.app(scope, receive, send_after_commit)


class _CommitFailedError(Exception):
    """Raised from ``send`` to stop the app once a failed commit has been answered."""


async def _commit_all(units: list[UnitOfWork]) -> tuple[int, bytes] | None:
    """Commit each writable unit of work; on a failure roll back the rest and describe it.

    Returns None when all committed, else the status (503 when the outcome is unknown, when
    COMMIT was never sent, or on a conflict; 500 otherwise) and the JSON body to answer with.
    """
    committed: list[str] = []
    for uow in units:
        if uow.read_only:
            continue
        try:
            await uow.commit()
        except Exception as error:
            unknown = isinstance(error, CommitOutcomeUnknownError)
            # Outcome unknown, never sent, or a conflict rolled back: worth retrying later.
            retry_later = unknown or isinstance(error, NotCommittedError) or is_conflict(error)
            status = 503 if retry_later else 500
            logger.exception("commit failed on database %r; answering %d", _name(uow), status)
            for other in units:
                with suppress(Exception):  # a broken connection cannot roll back either
                    await other.rollback()
            if unknown:
                detail = (
                    f"The outcome of the transaction on database {_name(uow)!r} is unknown: "
                    "the connection failed while it was being committed, so it may or may not "
                    "have been saved. It was not retried; retry with the same Idempotency-Key."
                )
            elif committed:
                detail = f"The transaction on database {_name(uow)!r} could not be committed;"
            else:
                detail = "The transaction could not be committed; nothing was saved."
            if committed:
                # Databases commit one after the other; there is no atomic commit across them.
                detail += f" the one(s) on {', '.join(map(repr, committed))} already were."
            return status, json.dumps(
                {"detail": detail, "outcome": "unknown" if unknown else "not_committed"}
            ).encode()
        committed.append(_name(uow))
    return None


def _name(uow: UnitOfWork) -> str:
    return getattr(uow.database, "name", "?")


async def _send_commit_failure(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _invalid_query(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


def _unavailable(
    detail: str, status: int = 503, retry_after: float | None = 1.0, outcome: str | None = None
) -> JSONResponse:
    headers = {} if retry_after is None else {"Retry-After": str(max(1, math.ceil(retry_after)))}
    body = {"detail": detail} if outcome is None else {"detail": detail, "outcome": outcome}
    return JSONResponse(body, status_code=status, headers=headers)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DatabaseUnavailableError)
    return _unavailable(str(exc), retry_after=exc.retry_after or 1.0)


async def _pool_timeout(request: Request, exc: Exception) -> JSONResponse:
    return _unavailable(
        "The service is busy: no database connection became free within the pool timeout. "
        "Try again shortly."
    )


async def _query_timeout(request: Request, exc: Exception) -> JSONResponse:
    return _unavailable(str(exc), status=504, retry_after=None)


async def _commit_outcome_unknown(request: Request, exc: Exception) -> JSONResponse:
    return _unavailable(f"The outcome is unknown: {exc}", outcome="unknown")


async def _not_committed(request: Request, exc: Exception) -> JSONResponse:
    return _unavailable(f"Nothing was saved: {exc}. Try again shortly.", outcome="not_committed")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, sa_exc.DBAPIError)
    state = sqlstate(exc)
    if state == QUERY_CANCELED:
        return _unavailable(
            "The database statement took longer than its time limit (statement_timeout) and "
            "was cancelled; nothing was saved.",
            status=504,
            retry_after=None,
        )
    if is_conflict(exc):
        return _unavailable(
            "This request conflicted with concurrent work (serialization failure or deadlock) "
            "and was rolled back; nothing was saved. Try again."
        )
    if state == LOCK_NOT_AVAILABLE:
        return _unavailable(
            "A row or table this request needs is locked by other work (lock_timeout passed); "
            "nothing was saved. Try again shortly."
        )
    if exc.connection_invalidated:
        return _unavailable(
            "The connection to the database was lost during the request; nothing was saved "
            "unless the request said otherwise. Try again shortly."
        )
    raise exc


def health_router(*, answer_within: float = 2.0) -> APIRouter:
    """``GET /health/live`` (the process answers; no database call) and ``GET /health/ready``
    (every database: status, latency, pool usage; 503 when a required one is down).

    Args:
        answer_within: seconds each database gets to answer ``SELECT 1``.
    """
    router = APIRouter(prefix="/health", tags=["health"])

    @router.get("/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        report = await check_health(get_databases(request), answer_within=answer_within)
        return JSONResponse(report.as_dict(), status_code=200 if report.ready else 503)

    return router


def metrics_router() -> APIRouter:
    """``GET /metrics``: the app's :class:`~asyncdal.metrics.DatabaseMetrics` in Prometheus
    text format (from the lifespan state's ``metrics``)."""
    from asyncdal.observe._metrics import CONTENT_TYPE

    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        collected = getattr(request.state, "metrics", None)
        if collected is None:
            raise UnitOfWorkError("no metrics in the app's lifespan state")
        return Response(collected.render(), media_type=CONTENT_TYPE)

    return router


def setup(app: FastAPI) -> None:
    """Install :class:`TransactionMiddleware` and
    :class:`~asyncdal.requestid.RequestIdMiddleware`, and map asyncdal's errors to HTTP statuses.

    ``InvalidQueryError`` (a sort or filter on a column that is not whitelisted) becomes 422.
    :class:`~asyncdal.consistency.ReadYourWritesMiddleware` handles ``X-DB-LSN`` for ``main``.

    Failures of the database become clear JSON answers instead of a 500 or a hang:

    ==============================================  =====  =============================
    error                                           HTTP   notes
    ==============================================  =====  =============================
    ``DatabaseUnavailableError`` (breaker open,     503    ``Retry-After``: the breaker's
    server unreachable)                                    cool-down left
    pool checkout past ``POOL_TIMEOUT``             503    ``Retry-After: 1``
    lock timeout (55P03)                            503    ``Retry-After: 1``
    connection lost during a statement              503    ``Retry-After: 1``
    ``CommitOutcomeUnknownError``                   503    body ``"outcome": "unknown"``,
                                                           ``Retry-After: 1``
    ``NotCommittedError`` (closed before COMMIT)    503    body ``"outcome":
                                                           "not_committed"``, ``Retry-After``
    serialization failure / deadlock (40001/40P01)  503    ``Retry-After: 1``
    statement timeout (57014)                       504
    ``QueryTimeoutError`` (``COMMAND_TIMEOUT``)     504
    ==============================================  =====  =============================
    """
    app.add_middleware(TransactionMiddleware)
    # Outside TransactionMiddleware, so it sees the response start after the commit.
    app.add_middleware(ReadYourWritesMiddleware)
    # Added last, so it runs first: the commit and its log lines see the request id.
    app.add_middleware(RequestIdMiddleware)
    app.add_exception_handler(InvalidQueryError, _invalid_query)
    app.add_exception_handler(DatabaseUnavailableError, _database_unavailable)
    app.add_exception_handler(sa_exc.TimeoutError, _pool_timeout)
    app.add_exception_handler(QueryTimeoutError, _query_timeout)
    app.add_exception_handler(CommitOutcomeUnknownError, _commit_outcome_unknown)
    app.add_exception_handler(NotCommittedError, _not_committed)
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
