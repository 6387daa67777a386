"""The request id of the running request or job, kept in a context variable.

The FastAPI middleware sets it from ``X-Request-ID``; :func:`request_id_scope` sets it for a
worker or a script. Log records and (optionally) ``application_name`` of the connections carry it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

__all__ = [
    "REQUEST_ID_HEADER",
    "accepted_request_id",
    "current_request_id",
    "request_id_scope",
    "reset_request_id",
    "set_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
"""The header a request id comes in and goes back out in."""
# An id from outside ends up in logs and in SQL, so only a plain token is taken as it is; any
# other value is replaced by a new id rather than escaped.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:+=@/-]{1,128}")

_current: ContextVar[str | None] = ContextVar("asyncdal_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request (or :func:`request_id_scope`) this code runs for, if any."""
    return _current.get()


def accepted_request_id(value: str | None) -> str:
    """``value`` if it is a plain token of at most 128 characters, else a new random id."""
    if value is not None and _ACCEPTED.fullmatch(value):
        return value
    return uuid.uuid4().hex


def set_request_id(request_id: str) -> Token[str | None]:
    """Set an id already vetted (:func:`accepted_request_id`) or made here; give the token to
    :func:`reset_request_id` when done. :func:`request_id_scope` without its context manager,
    for the request middleware, which runs it for every request."""
    return _current.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    """Put back the id :func:`set_request_id` replaced."""
    _current.reset(token)


@contextmanager
def request_id_scope(request_id: str | None = None) -> Iterator[str]:
    """Run a block under a request id (a new one when omitted or not a plain token).

    Args:
        request_id: the id to use, e.g. a job or event id.

    Yields:
        The id in effect.
    """
    accepted = accepted_request_id(request_id)
    token = _current.set(accepted)
    try:
        yield accepted
    finally:
        _current.reset(token)
