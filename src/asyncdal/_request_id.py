"""The request id of the running request or job, kept in a context variable.

The FastAPI middleware sets it from ``X-Request-ID``; :func:`request_id_scope` sets it for a
worker or a script. Log records and (optionally) ``application_name`` of the connections carry it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = [
    "REQUEST_ID",
    "REQUEST_ID_HEADER",
    "accepted_request_id",
    "current_request_id",
    "request_id_scope",
]

REQUEST_ID_HEADER = "X-Request-ID"
"""The header a request id comes in and goes back out in."""
# An id from outside ends up in logs and in SQL, so only a plain token is taken as it is; any
# other value is replaced by a new id rather than escaped.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:+=@/-]{1,128}")

REQUEST_ID: ContextVar[str | None] = ContextVar("asyncdal_request_id", default=None)
"""The request id in force (set and put back directly by the request middleware, which runs for
every request: a call each way saved)."""


def current_request_id() -> str | None:
    """The id of the request (or :func:`request_id_scope`) this code runs for, if any."""
    return REQUEST_ID.get()


def accepted_request_id(value: str | None) -> str:
    """``value`` if it is a plain token of at most 128 characters, else a new random id."""
    if value is not None and _ACCEPTED.fullmatch(value):
        return value
    return uuid.uuid4().hex


@contextmanager
def request_id_scope(request_id: str | None = None) -> Iterator[str]:
    """Run a block under a request id (a new one when omitted or not a plain token).

    Args:
        request_id: the id to use, e.g. a job or event id.

    Yields:
        The id in effect.
    """
    accepted = accepted_request_id(request_id)
    token = REQUEST_ID.set(accepted)
    try:
        yield accepted
    finally:
        REQUEST_ID.reset(token)
