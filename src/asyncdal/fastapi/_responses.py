"""The bodies of asyncdal's error answers, as models, and ``responses=`` for the routes.

Every error answer :func:`~asyncdal.fastapi.setup` installs has one of these bodies:

- :class:`ErrorDetail` (``{"detail"}``): the 400 for an ``X-DB-LSN`` that is not a WAL
  position, the 504 of a statement or query timeout, the 422 of an ``InvalidValueError``;
- :class:`ConstraintViolation` (``{"detail", "constraint"}``): the 409 of a unique or
  foreign-key violation, the 422 of another constraint;
- :class:`ServiceUnavailable` (``{"detail"}``, and ``"outcome"`` for a failed commit): every
  503, with ``Retry-After``;
- :class:`InternalError` (``{"detail", "request_id"}``): the 500 of any other exception;
- :class:`CommitFailed` (``{"detail", "outcome": "not_committed"}``): the 500 of a commit that
  failed for a reason retrying will not fix;
- :class:`InvalidRequest`: the 422 of an ``InvalidQueryError``, in FastAPI's validation-error
  shape (``{"detail": [{"loc", "msg", "type"}]}``), so that one 422 shape covers every invalid
  request.

``setup(app)`` documents the answers every route can give (400, 500) and those of every route
that uses a database provider (503, 504) in the app's OpenAPI document. What depends on the
route's own data, a 409 or a 422 for data the database refused, the route states with
:func:`error_responses`.

Example:
    >>> @app.post("/products", status_code=201, responses=error_responses(UniqueViolationError))
    ... async def create(body: ProductIn, products: Products) -> ProductOut: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import SkipJsonSchema

from asyncdal._request_id import REQUEST_ID_HEADER
from asyncdal.errors import (
    AsyncdalError,
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
    NotFoundError,
    PoolTimeoutError,
    QueryTimeoutError,
    StaleVersionError,
    StatementTimeoutError,
    UniqueViolationError,
)

__all__ = [
    "Answer",
    "CommitFailed",
    "ConstraintViolation",
    "ErrorDetail",
    "InternalError",
    "InvalidRequest",
    "RequestIssue",
    "ServiceUnavailable",
    "answer_for_status",
    "error_responses",
]


class ErrorDetail(BaseModel):
    """``{"detail": "..."}``: what went wrong, for a person."""

    model_config = ConfigDict(extra="forbid")

    detail: str


class ConstraintViolation(BaseModel):
    """Data the database refused: the message and the constraint it broke."""

    model_config = ConfigDict(extra="forbid")

    detail: str
    constraint: str | None
    """The constraint's name, when the server gave it."""


class ServiceUnavailable(BaseModel):
    """The database could not do the work now; try again after ``Retry-After`` seconds."""

    model_config = ConfigDict(extra="forbid")

    detail: str
    # Left out of the body (not null) when nothing was committing; SkipJsonSchema keeps the
    # null that never appears out of the schema.
    outcome: Literal["unknown", "not_committed"] | SkipJsonSchema[None] = None
    """For a failed commit: ``unknown`` (it may or may not have been saved; retry with the same
    idempotency key) or ``not_committed`` (nothing was saved)."""


class CommitFailed(BaseModel):
    """The commit before the response failed for a reason retrying will not fix."""

    model_config = ConfigDict(extra="forbid")

    detail: str
    outcome: Literal["not_committed"]


class InternalError(BaseModel):
    """Any other failure; ``request_id`` ties the answer to the server's log lines."""

    model_config = ConfigDict(extra="forbid")

    detail: str
    request_id: str


class RequestIssue(BaseModel):
    """One problem with the request, as FastAPI reports a validation error."""

    loc: list[str | int]
    """Where: ``["query", "sort"]``, ``["body", "price"]``."""
    msg: str
    type: str
    input: Any = None
    ctx: dict[str, Any] | SkipJsonSchema[None] = None


class InvalidRequest(BaseModel):
    """FastAPI's 422 body, which asyncdal's 422 for an ``InvalidQueryError`` shares."""

    detail: list[RequestIssue]


@dataclass(frozen=True, slots=True)
class Answer:
    """What one status of asyncdal's answers says: its description, bodies and headers."""

    status: int
    description: str
    models: tuple[type[BaseModel], ...]
    headers: tuple[tuple[str, dict[str, Any]], ...] = ()

    def responses_entry(self) -> dict[str, Any]:
        """The entry for FastAPI's ``responses=`` (``model`` becomes the body's schema)."""
        entry: dict[str, Any] = {"description": self.description, "model": self.model}
        if self.headers:
            entry["headers"] = dict(self.headers)
        return entry

    @property
    def model(self) -> Any:
        """The body's type: the model, or the union of the models."""
        if len(self.models) == 1:
            return self.models[0]
        return Union[self.models]  # noqa: UP007 (a union built from a tuple at run time)


_RETRY_AFTER = (
    "Retry-After",
    {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
)
_REQUEST_ID = (
    REQUEST_ID_HEADER,
    {
        "description": "The request's id, as in the body and the server's log lines.",
        "required": True,
        "schema": {"type": "string"},
    },
)

# (error, status, body) in the order the handlers are looked up: an error answers with its
# first row here that it is an instance of.
_ROWS: tuple[tuple[type[Exception], int, type[BaseModel]], ...] = (
    (InvalidQueryError, 422, InvalidRequest),
    (DatabaseUnavailableError, 503, ServiceUnavailable),
    (ConnectionLostError, 503, ServiceUnavailable),
    (PoolTimeoutError, 503, ServiceUnavailable),
    (LockTimeoutError, 503, ServiceUnavailable),
    (ConflictError, 503, ServiceUnavailable),
    (CommitOutcomeUnknownError, 503, ServiceUnavailable),
    (NotCommittedError, 503, ServiceUnavailable),
    (StatementTimeoutError, 504, ErrorDetail),
    (QueryTimeoutError, 504, ErrorDetail),
    (DeadlineExceededError, 504, ErrorDetail),
    (UniqueViolationError, 409, ConstraintViolation),
    (ForeignKeyViolationError, 409, ConstraintViolation),
    (ConstraintViolationError, 422, ConstraintViolation),
    (InvalidValueError, 422, ErrorDetail),
    (NotFoundError, 404, ErrorDetail),
    (StaleVersionError, 412, ErrorDetail),
)

# What each body means under each status, for the response's description.
_MEANINGS: dict[tuple[int, type[BaseModel]], str] = {
    (400, ErrorDetail): "The X-DB-LSN header is not a WAL position.",
    (404, ErrorDetail): "No row has that key.",
    (412, ErrorDetail): "The row changed since the version named in If-Match was read; read "
    "it again (its new ETag) and retry.",
    (428, ErrorDetail): "If-Match is required: send the ETag of the version you are changing.",
    (409, ConstraintViolation): "The database refused the data: a duplicate key or a missing "
    "parent row (the constraint is named).",
    (422, InvalidRequest): "The request is invalid (each problem is located and named).",
    (422, ConstraintViolation): "The database refused the data: a check, not-null or "
    "exclusion constraint (named).",
    (422, ErrorDetail): "The database refused a value (out of range, malformed).",
    (500, InternalError): "An unexpected failure; the body and X-Request-ID give the request's id.",
    (500, CommitFailed): "The commit before the answer failed for a reason retrying will not "
    "fix; nothing was saved.",
    (503, ServiceUnavailable): "The database is unavailable, busy or conflicted, or a commit "
    "failed (outcome); nothing was saved unless the outcome is unknown. Try again after "
    "Retry-After seconds.",
    (504, ErrorDetail): "A database statement ran past its time limit and was cancelled; "
    "nothing was saved.",
}

# Every body each status can have, for a status asked for as a number.
_ALL_MODELS: dict[int, tuple[type[BaseModel], ...]] = {
    400: (ErrorDetail,),
    404: (ErrorDetail,),
    409: (ConstraintViolation,),
    412: (ErrorDetail,),
    422: (InvalidRequest, ConstraintViolation, ErrorDetail),
    428: (ErrorDetail,),
    500: (InternalError, CommitFailed),
    503: (ServiceUnavailable,),
    504: (ErrorDetail,),
}


def answer_for_status(status: int, models: tuple[type[BaseModel], ...] | None = None) -> Answer:
    """asyncdal's answer with ``status``: with every body it can have, or only ``models``."""
    if status not in _ALL_MODELS:
        raise ValueError(f"asyncdal gives no {status} answer; it answers {sorted(_ALL_MODELS)}")
    if status == 422 and models is not None and InvalidRequest not in models:
        # A route that takes input also answers FastAPI's own 422, which a 422 entry of its
        # own would otherwise leave out of the document.
        models = (InvalidRequest, *models)
    chosen = _ALL_MODELS[status] if models is None else tuple(dict.fromkeys(models))
    headers = {503: (_RETRY_AFTER,), 500: (_REQUEST_ID,)}.get(status, ())
    description = " ".join(_MEANINGS[status, model] for model in chosen)
    return Answer(status, description, chosen, headers)


def _rows_for(error: type[Exception]) -> list[tuple[int, type[BaseModel]]]:
    """The answers ``error`` and its subclasses give, as the handlers pick them."""
    rows: list[tuple[int, type[BaseModel]]] = []
    own = next((row for row in _ROWS if issubclass(error, row[0])), None)
    if own is not None:
        rows.append(own[1:])
    rows.extend(row[1:] for row in _ROWS if row[0] is not error and issubclass(row[0], error))
    return rows


def error_responses(*answers: int | type[AsyncdalError]) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` for the asyncdal answers it can give, with their bodies.

    Args:
        answers: asyncdal errors the route may raise (each stands for its subclasses too:
            ``ConstraintViolationError`` is a 409 or a 422), or statuses (every body asyncdal
            answers with that status).

    Returns:
        ``{status: {"description", "model", "headers"}}`` for FastAPI. A 422 entry always
        includes FastAPI's validation-error body, which it would otherwise leave out.

    Raises:
        ValueError: an error or status asyncdal does not answer (such as ``ReadOnlyError``,
            a bug of the application's, which is a 500).

    Example:
        >>> @app.post("/items", responses=error_responses(UniqueViolationError, 503))
    """
    models: dict[int, list[type[BaseModel]]] = {}
    everything: set[int] = set()
    for answer in answers:
        if isinstance(answer, int):
            answer_for_status(answer)  # refuses a status asyncdal does not answer
            everything.add(answer)
            continue
        rows = _rows_for(answer)
        if not rows:
            raise ValueError(f"asyncdal answers {answer.__name__} with a plain 500")
        for status, model in rows:
            models.setdefault(status, []).append(model)
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(everything | set(models)):
        chosen = None if status in everything else tuple(models[status])
        responses[status] = answer_for_status(status, chosen).responses_entry()
    return responses
