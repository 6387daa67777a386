"""HTTP answers for the CRUD helpers' errors: ``NotFoundError`` is a 404, ``StaleVersionError``
a 412 (``Precondition Failed``), both ``{"detail": ...}``.

``setup(app)`` registers them; :func:`crud_refusal` gives the same answer for a version
conflict found by the commit that ``TransactionMiddleware`` sends.

Example:
    >>> add_crud_error_handlers(app)   # done by asyncdal.fastapi.setup(app)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from asyncdal.errors import NotFoundError, StaleVersionError

__all__ = ["add_crud_error_handlers", "crud_refusal"]


def crud_refusal(error: Exception) -> tuple[int, dict[str, Any]] | None:
    """The status and JSON body for a CRUD helper's error, or None for any other."""
    if isinstance(error, NotFoundError):
        return 404, {"detail": str(error)}
    if isinstance(error, StaleVersionError):
        return 412, {"detail": str(error)}
    return None


async def _answer(request: Request, exc: Exception) -> Response:
    answer = crud_refusal(exc)
    assert answer is not None
    status, body = answer
    return JSONResponse(body, status_code=status)


def add_crud_error_handlers(app: FastAPI) -> None:
    """Answer ``NotFoundError`` with 404 and ``StaleVersionError`` with 412."""
    app.add_exception_handler(NotFoundError, _answer)
    app.add_exception_handler(StaleVersionError, _answer)
