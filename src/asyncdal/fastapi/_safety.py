"""The request's side of the safety nets: who is asking, how many statements, what deadline.

The one middleware ``setup(app)`` installs (:class:`~asyncdal.fastapi._request.RequestMiddleware`)
runs each request with :class:`RequestNets` when a :class:`SafetyPlan` says some database of the
app needs it: the request runs in a
:class:`~asyncdal.engine._scope.RequestScope`, which the engines' listeners (and their stand-ins
on the driver read path) read: the route template names a connection's holder (leak and
idle-hold warnings, the hold-time metric, ``/health/ready``) and the statements are counted for
``MAX_QUERIES_PER_REQUEST``. With ``REQUEST_TIMEOUT`` set, the request runs in a
:func:`asyncdal.deadline`; one that runs out is answered 504. With none of the settings on for
any database, none of this runs: the request costs nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.types import Scope

from asyncdal.engine._deadline import Deadline
from asyncdal.engine._scope import REQUEST_SCOPE, RequestScope
from asyncdal.errors import DeadlineExceededError
from asyncdal.settings import DatabaseSettings

__all__ = ["RequestNets", "SafetyPlan", "safety_plan"]

queries_logger = logging.getLogger("asyncdal.queries")


class SafetyPlan:
    """What the databases of an app ask of each request.

    Attributes:
        timeout: the smallest ``REQUEST_TIMEOUT`` of the databases, or None.
    """

    __slots__ = ("timeout",)

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout


def safety_plan(settings: Iterable[DatabaseSettings]) -> SafetyPlan | None:
    """The plan for an app whose databases have ``settings``; None when no request needs any
    safety-net work (no ``REQUEST_TIMEOUT``, ``MAX_QUERIES_PER_REQUEST``,
    ``LEAK_DETECTION_SECONDS`` or ``IDLE_HOLD_SECONDS`` on any of them)."""
    nets = [each.safety for each in settings]
    timeouts = [net.request_timeout for net in nets if net.request_timeout is not None]
    timeout = min(timeouts) if timeouts else None
    active = timeout is not None or any(
        net.max_queries_per_request is not None
        or net.leak_detection_seconds is not None
        or net.idle_hold_seconds is not None
        for net in nets
    )
    return SafetyPlan(timeout) if active else None


class RequestNets:
    """One request's side of the safety nets, from the request's start to its end: plain
    calls that :func:`~asyncdal.fastapi._middleware.serve_settling` makes, so that the nets
    add no coroutine or ``send`` wrapper of their own to the request.

    On creation the request runs in a :class:`~asyncdal.engine._scope.RequestScope` and, with
    a timeout planned, within a :class:`~asyncdal.engine._deadline.Deadline`. The deadline
    covers the handler and the commit made when the response starts, not the sending of the
    body (:meth:`response_started`).

    Args:
        plan: what the app's databases ask of each request.
        scope: the request's ASGI scope.
    """

    __slots__ = ("_token", "budget", "request", "started")

    def __init__(self, plan: SafetyPlan, scope: Scope) -> None:
        request = self.request = RequestScope(scope, scope.get("method", ""))
        # The variable itself rather than request_scope(), and the deadline's start() and
        # stop() rather than ``async with``: context managers cost every request calls and
        # an awaitable each; try/finally in the caller does the same.
        self._token = REQUEST_SCOPE.set(request)
        self.started = False
        """Whether the response has started (a deadline that runs out later is not answered)."""
        self.budget = None if plan.timeout is None else Deadline(plan.timeout).start()

    def response_started(self) -> None:
        """The response's start was sent (after the commit): what follows is not bounded."""
        self.started = True
        if self.budget is not None:
            self.budget.disarm()

    def stop(self, error: BaseException | None) -> BaseException | None:
        """The app returned, or raised ``error``: take the deadline out of force.

        Returns:
            The error to go on with: a cancel the deadline made (it ran out outside a
            statement) becomes :class:`~asyncdal.errors.DeadlineExceededError`.
        """
        if self.budget is not None:
            try:
                self.budget.stop(None if error is None else type(error))
            except DeadlineExceededError as exceeded:
                return exceeded
        return error

    def answers(self, error: BaseException) -> bool:
        """Whether ``error`` is the deadline's, to be answered 504 here: only while no
        response has started (else it propagates as any error would)."""
        return isinstance(error, DeadlineExceededError) and not self.started

    def leave(self) -> None:
        """The request is over: out of its scope; warn when it ran too many statements."""
        REQUEST_SCOPE.reset(self._token)
        request = self.request
        if request.limit is not None and request.total > request.limit:
            _warn_about_queries(request)


def _warn_about_queries(request: RequestScope) -> None:
    statement, times = request.most_repeated()
    queries_logger.warning(
        "%s %s ran %d statements (more than MAX_QUERIES_PER_REQUEST=%d); the one repeated "
        "most (%d times, an N+1 pattern if it loads one row per row of another): %s",
        request.method,
        request.route,
        request.total,
        request.limit,
        times,
        statement,
        extra={
            "route": request.route,
            "statements": request.total,
            "limit": request.limit,
            "repeated": times,
            "statement": statement,
        },
    )
