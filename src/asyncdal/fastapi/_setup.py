"""``setup(app)``: the middlewares and the error answers, in the order they must run."""

from __future__ import annotations

from fastapi import FastAPI

from asyncdal.fastapi._crud_errors import add_crud_error_handlers
from asyncdal.fastapi._errors import add_error_handlers
from asyncdal.fastapi._openapi import document_answers
from asyncdal.fastapi._request import RequestMiddleware

__all__ = ["setup"]


def setup(app: FastAPI) -> None:
    """Install one middleware doing the work of :class:`~asyncdal.fastapi.TransactionMiddleware`,
    :class:`~asyncdal.consistency.ReadYourWritesMiddleware` (``X-DB-LSN`` for ``main``) and
    :class:`~asyncdal.requestid.RequestIdMiddleware`, and answer asyncdal's errors in JSON.

    The same middleware runs each request in the safety nets' request scope (its route template
    names a connection's holder; its statements are counted) and within ``REQUEST_TIMEOUT``,
    only when some database sets ``REQUEST_TIMEOUT``, ``MAX_QUERIES_PER_REQUEST``,
    ``LEAK_DETECTION_SECONDS`` or ``IDLE_HOLD_SECONDS``; otherwise a request costs nothing more.

    Failures of the database become clear answers instead of a 500 or a hang, and data the
    database refused a 409 or a 422; any other exception is a JSON 500. Every answer, a 500
    included, carries ``X-Request-ID``:

    ==============================================  =====  ==================================
    error (``asyncdal.errors``)                     HTTP   notes
    ==============================================  =====  ==================================
    ``DatabaseUnavailableError`` (breaker open,     503    ``Retry-After``: the breaker's
    server unreachable)                                    cool-down left
    ``PoolTimeoutError`` (past ``POOL_TIMEOUT``)    503    ``Retry-After: 1``
    ``LockTimeoutError`` (55P03)                    503    ``Retry-After: 1``
    ``ConnectionLostError`` (during a statement)    503    ``Retry-After: 1``
    ``CommitOutcomeUnknownError``                   503    body ``"outcome": "unknown"``,
                                                           ``Retry-After: 1``
    ``NotCommittedError`` (closed before COMMIT)    503    body ``"outcome":
                                                           "not_committed"``, ``Retry-After``
    ``SerializationError``, ``DeadlockError``       503    ``Retry-After: 1``
    (40001/40P01)
    ``StatementTimeoutError`` (57014)               504
    ``QueryTimeoutError`` (``COMMAND_TIMEOUT``)     504
    ``DeadlineExceededError`` (``REQUEST_TIMEOUT``) 504
    ``UniqueViolationError`` (23505),               409    ``{"detail": ..., "constraint":
    ``ForeignKeyViolationError`` (23503)                   ...}``, in the handler or at COMMIT
    other ``ConstraintViolationError`` (23xxx)      422    ``{"detail": ..., "constraint":
                                                           ...}``
    ``InvalidValueError`` (class 22)                422    ``{"detail": ...}``
    ``InvalidQueryError`` (sort/filter not          422    FastAPI's validation-error body,
    whitelisted)                                           ``loc`` naming the parameter
    ``NotFoundError`` (``get_one``)                 404    ``{"detail": ...}``
    ``StaleVersionError`` (version column)          412    ``{"detail": ...}``, in the handler
                                                           or at COMMIT
    ``check_if_match(required=True)``, no header    428    ``{"detail": ...}``
    any other exception                             500    ``{"detail": ..., "request_id":
                                                           ...}``
    ==============================================  =====  ==================================

    A malformed ``X-DB-LSN`` header is a 400. The app's OpenAPI document says all this: every
    operation gets the ``X-DB-LSN`` header, the 400 and the 500; every operation that uses a
    database provider the 503 (with ``Retry-After``) and the 504. A route states the 409 and
    422 of data the database may refuse, and the 404, 412 and 428 of the CRUD helpers, with
    :func:`~asyncdal.fastapi.error_responses`.

    A handler for ``Exception`` (or 500) registered after this call replaces the JSON 500.
    """
    # One middleware doing the work of the three, and of the safety nets' request scope and
    # deadline when a database switches them on (each layer costs every request a call, a
    # closure and a copy of the response's start message).
    app.add_middleware(RequestMiddleware)
    add_error_handlers(app)
    add_crud_error_handlers(app)  # NotFoundError 404, StaleVersionError 412
    document_answers(app)
