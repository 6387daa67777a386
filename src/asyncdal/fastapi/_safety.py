"""The request's side of the safety nets: who is asking, how many statements, what deadline.

The one middleware ``setup(app)`` installs (:class:`~asyncdal.fastapi._request.RequestMiddleware`)
runs each request through :func:`serve_with_safety_nets` when a :class:`SafetyPlan` says some
database of the app needs it: the request runs in a
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

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asyncdal.engine._deadline import Deadline
from asyncdal.engine._scope import REQUEST_SCOPE, RequestScope
from asyncdal.errors import DeadlineExceededError
from asyncdal.fastapi._errors import deadline_answer
from asyncdal.settings import DatabaseSettings

__all__ = ["SafetyPlan", "safety_plan", "serve_with_safety_nets"]

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


async def serve_with_safety_nets(
    app: ASGIApp,
    plan: SafetyPlan,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Run ``app`` for one request in a request scope, within the plan's deadline.

    The deadline covers the handler and what ``send`` does with the response's start (the
    commit), not the sending of the body. A deadline that runs out in a statement is a
    :class:`~asyncdal.errors.DeadlineExceededError` the handler raises (answered 504 by the
    error handlers); one that runs out elsewhere (waiting for a connection) is answered 504
    here, when no response has started.
    """
    request = RequestScope(scope, scope.get("method", ""))
    # The variable itself rather than request_scope(), and the deadline's start() and stop()
    # rather than ``async with``: context managers cost every request calls and an awaitable
    # each; this runs once per request, try/finally does the same.
    token = REQUEST_SCOPE.set(request)
    try:
        if plan.timeout is None:
            await app(scope, receive, send)
            return
        budget = Deadline(plan.timeout)
        started = False

        async def send_then_disarm(message: Message) -> None:
            nonlocal started
            # The commit happens inside this send: still bounded.
            await send(message)
            if message["type"] == "http.response.start":
                started = True
                budget.disarm()

        try:
            budget.start()
            try:
                await app(scope, receive, send_then_disarm)
            except BaseException as error:
                budget.stop(type(error))
                raise
            budget.stop(None)
        except DeadlineExceededError as error:
            if started:
                raise
            await deadline_answer(error)(scope, receive, send)
    finally:
        REQUEST_SCOPE.reset(token)
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
