"""HTTP answers for asyncdal's errors, and a JSON 500 that carries ``X-Request-ID``.

Only :mod:`asyncdal.errors` are mapped here: the engine translates the driver's and
SQLAlchemy's exceptions into them where they arise (see ``asyncdal._translate``), so nothing
here looks at a SQLSTATE or a SQLAlchemy class.

============================================  =====  ==============================================
error                                         HTTP   body and headers
============================================  =====  ==============================================
``DatabaseUnavailableError`` (breaker open,   503    ``Retry-After``: the breaker's cool-down left
server unreachable)
``ConnectionLostError`` (during a statement)  503    ``Retry-After: 1``
``PoolTimeoutError`` (pool exhausted)         503    ``Retry-After: 1``
``LockTimeoutError`` (55P03)                  503    ``Retry-After: 1``
``ConflictError``: ``SerializationError``,    503    ``Retry-After: 1``
``DeadlockError`` (40001/40P01)
``CommitOutcomeUnknownError``                 503    ``"outcome": "unknown"``, ``Retry-After: 1``
``NotCommittedError`` (closed before COMMIT)  503    ``"outcome": "not_committed"``, ``Retry-After``
``StatementTimeoutError`` (57014)             504
``QueryTimeoutError`` (``COMMAND_TIMEOUT``)   504
``DeadlineExceededError`` (``REQUEST_TIMEOUT``, 504
``asyncdal.deadline``)
``UniqueViolationError`` (23505),             409    ``{"detail": ..., "constraint": ...}``
``ForeignKeyViolationError`` (23503)
other ``ConstraintViolationError`` (class     422    ``{"detail": ..., "constraint": ...}``
23: check, not null, exclusion)
``InvalidValueError`` (class 22)              422    ``{"detail": ...}``
``InvalidQueryError`` (repository query)      422    FastAPI's validation-error body:
                                                     ``{"detail": [{"loc": ["query", parameter],
                                                     "msg": ..., "type": "invalid_query"}]}``
FastAPI's ``RequestValidationError``          422    FastAPI's own body, which cannot fail to
                                                     encode (a lone surrogate in the input)
any other exception                           500    ``{"detail": ..., "request_id": ...}``
============================================  =====  ==============================================

The bodies are the models of ``asyncdal.fastapi._responses``, which the OpenAPI document uses.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from asyncdal._request_id import REQUEST_ID_HEADER, accepted_request_id, request_id_scope
from asyncdal.errors import (
    CommitOutcomeUnknownError,
    ConflictError,
    ConnectionLostError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    DeadlineExceededError,
    ForeignKeyViolationError,
    InvalidQueryError,
    InvalidValueError,
    LockTimeoutError,
    NotCommittedError,
    PoolTimeoutError,
    QueryTimeoutError,
    StatementTimeoutError,
    UniqueViolationError,
)
from asyncdal.observe._request_id import SCOPE_KEY as REQUEST_ID_KEY

__all__ = ["add_error_handlers", "deadline_answer", "refusal"]

logger = logging.getLogger("asyncdal.fastapi")

Handler = Callable[[Request, Exception], Awaitable[Response]]


class _JSONResponse(JSONResponse):
    """Starlette's JSON answer, which never fails to encode.

    A JSON body may carry a lone surrogate (``"\\ud800"``), which Python decodes but UTF-8
    cannot encode: an answer echoing it (FastAPI's 422 shows the input) would become a 500.
    Such a body is sent with non-ASCII characters escaped instead, which JSON allows.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(
                content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
            ).encode("ascii")


def refusal(error: Exception) -> tuple[int, dict[str, Any]] | None:
    """The status and JSON body for data the database refused, whichever way it came.

    One answer for a violation found while the handler ran (a flush) and for one found at the
    COMMIT :class:`~asyncdal.fastapi.TransactionMiddleware` sends (a deferred constraint).

    Returns:
        409 for a duplicate key or a broken foreign key, 422 for another constraint or an
        invalid value, with the body; None for any other error.
    """
    if isinstance(error, UniqueViolationError | ForeignKeyViolationError):
        return 409, {"detail": str(error), "constraint": error.constraint}
    if isinstance(error, ConstraintViolationError):
        return 422, {"detail": str(error), "constraint": error.constraint}
    if isinstance(error, InvalidValueError):
        return 422, {"detail": str(error)}
    return None


def _unavailable(
    detail: str, status: int = 503, retry_after: float | None = 1.0, outcome: str | None = None
) -> JSONResponse:
    headers = {} if retry_after is None else {"Retry-After": str(max(1, math.ceil(retry_after)))}
    body = {"detail": detail} if outcome is None else {"detail": detail, "outcome": outcome}
    return _JSONResponse(body, status_code=status, headers=headers)


async def _refused(request: Request, exc: Exception) -> Response:
    answer = refusal(exc)
    assert answer is not None
    status, body = answer
    return _JSONResponse(body, status_code=status)


async def _invalid_query(request: Request, exc: Exception) -> Response:
    """FastAPI's validation-error body: one 422 shape for every invalid request, so the
    document's ``HTTPValidationError`` holds for this one too."""
    assert isinstance(exc, InvalidQueryError)
    location = ["query"] if exc.parameter is None else ["query", exc.parameter]
    issue = {"type": "invalid_query", "loc": location, "msg": str(exc)}
    return _JSONResponse({"detail": [issue]}, status_code=422)


async def _request_invalid(request: Request, exc: Exception) -> Response:
    """FastAPI's own answer to a request that fails validation, rendered by
    :class:`_JSONResponse`."""
    assert isinstance(exc, RequestValidationError)
    return _JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DatabaseUnavailableError)
    return _unavailable(str(exc), retry_after=exc.retry_after or 1.0)


async def _connection_lost(request: Request, exc: Exception) -> Response:
    return _unavailable(
        "The connection to the database was lost during the request; nothing was saved "
        "unless the request said otherwise. Try again shortly."
    )


async def _pool_timeout(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PoolTimeoutError)
    return _unavailable(
        "The service is busy: no database connection became free within the pool timeout. "
        "Try again shortly.",
        retry_after=exc.retry_after,
    )


async def _lock_timeout(request: Request, exc: Exception) -> Response:
    return _unavailable(
        "A row or table this request needs is locked by other work (lock_timeout passed); "
        "nothing was saved. Try again shortly."
    )


async def _conflict(request: Request, exc: Exception) -> Response:
    return _unavailable(
        "This request conflicted with concurrent work (serialization failure or deadlock) "
        "and was rolled back; nothing was saved. Try again."
    )


async def _statement_timeout(request: Request, exc: Exception) -> Response:
    return _unavailable(
        "The database statement took longer than its time limit (statement_timeout) and "
        "was cancelled; nothing was saved.",
        status=504,
        retry_after=None,
    )


def deadline_answer(error: DeadlineExceededError) -> JSONResponse:
    """The 504 for a request whose deadline (``REQUEST_TIMEOUT``, ``asyncdal.deadline``) ran
    out."""
    return _unavailable(
        f"The request's deadline for database work ({error.seconds:g} s) ran out; what it "
        "had started on the database was cancelled and nothing was saved.",
        status=504,
        retry_after=None,
    )


async def _deadline_exceeded(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DeadlineExceededError)
    return deadline_answer(exc)


async def _query_timeout(request: Request, exc: Exception) -> Response:
    return _unavailable(str(exc), status=504, retry_after=None)


async def _commit_outcome_unknown(request: Request, exc: Exception) -> Response:
    return _unavailable(f"The outcome is unknown: {exc}", outcome="unknown")


async def _not_committed(request: Request, exc: Exception) -> Response:
    return _unavailable(f"Nothing was saved: {exc}. Try again shortly.", outcome="not_committed")


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Starlette's 500, in JSON and with the request's id.

    Starlette calls it from ``ServerErrorMiddleware``, outside every middleware ``setup`` adds,
    so the id comes from the scope (where the request-id middleware left it), not the
    response headers that middleware would have set.
    """
    request_id = request.scope.get(REQUEST_ID_KEY) or accepted_request_id(
        request.headers.get(REQUEST_ID_HEADER)
    )
    with request_id_scope(request_id):
        # One line that ties the id the client saw to the traceback the server logs next.
        logger.error("unhandled %s; answering 500", type(exc).__name__)
    return _JSONResponse(
        {"detail": "Internal Server Error", "request_id": request_id},
        status_code=500,
        headers={REQUEST_ID_HEADER: request_id},
    )


_HANDLERS: dict[type[Exception], Handler] = {
    RequestValidationError: _request_invalid,
    InvalidQueryError: _invalid_query,
    DatabaseUnavailableError: _database_unavailable,
    ConnectionLostError: _connection_lost,
    PoolTimeoutError: _pool_timeout,
    LockTimeoutError: _lock_timeout,
    ConflictError: _conflict,
    StatementTimeoutError: _statement_timeout,
    QueryTimeoutError: _query_timeout,
    DeadlineExceededError: _deadline_exceeded,
    CommitOutcomeUnknownError: _commit_outcome_unknown,
    NotCommittedError: _not_committed,
    ConstraintViolationError: _refused,
    InvalidValueError: _refused,
    # Starlette gives a handler for Exception to its ServerErrorMiddleware: the 500.
    Exception: _internal_error,
}


def add_error_handlers(app: FastAPI) -> None:
    """Answer asyncdal's errors as the table in this module says, and any other with a JSON
    500 carrying ``X-Request-ID``."""
    for error, handler in _HANDLERS.items():
        app.add_exception_handler(error, handler)
