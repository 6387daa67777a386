"""The request's side of the safety nets: who is asking, how many statements, what deadline.

:class:`SafetyNetMiddleware` (installed by ``setup(app)``) runs each request in a
:class:`~asyncdal.engine._scope.RequestScope`, which the engines' listeners read: the route
template names a connection's holder (leak and idle-hold warnings, the hold-time metric,
``/health/ready``) and the statements are counted for ``MAX_QUERIES_PER_REQUEST``. With
``REQUEST_TIMEOUT`` set, the request runs in a :func:`asyncdal.deadline`; one that runs out
is answered 504. With none of the settings on for any database, it only passes the request on.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asyncdal.engine._deadline import Deadline
from asyncdal.engine._scope import RequestScope, request_scope
from asyncdal.errors import DeadlineExceededError
from asyncdal.fastapi._errors import deadline_answer
from asyncdal.orm._databases import Databases

__all__ = ["SafetyNetMiddleware"]

queries_logger = logging.getLogger("asyncdal.queries")


class _Plan:
    """What the databases of an app ask of each request."""

    __slots__ = ("active", "timeout")

    def __init__(self, databases: Databases | None) -> None:
        settings = [] if databases is None else [db.settings.safety for db in databases.values()]
        timeouts = [s.request_timeout for s in settings if s.request_timeout is not None]
        self.timeout: float | None = min(timeouts) if timeouts else None
        self.active = (
            any(
                s.max_queries_per_request is not None
                or s.leak_detection_seconds is not None
                or s.idle_hold_seconds is not None
                for s in settings
            )
            or self.timeout is not None
        )


class SafetyNetMiddleware:
    """Run each request in a request scope for the safety nets, within ``REQUEST_TIMEOUT``.

    A pure ASGI middleware. The request's deadline is the smallest ``REQUEST_TIMEOUT`` of the
    app's databases; it covers the handler and the commit, not the sending of the body. A
    deadline that runs out in a statement is a :class:`~asyncdal.errors.DeadlineExceededError`
    the handler raises (answered 504 by the error handlers); one that runs out elsewhere
    (waiting for a connection) is answered 504 here, when no response has started.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._plans: dict[int, _Plan] = {}

    def _plan(self, scope: Scope) -> _Plan:
        state: Any = scope.get("state") or {}
        databases = state.get("databases") if isinstance(state, dict) else None
        if not isinstance(databases, Databases):
            databases = None
        key = id(databases)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _Plan(databases)
        return plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        plan = self._plan(scope)
        if not plan.active:
            await self.app(scope, receive, send)
            return
        request = RequestScope(scope, scope.get("method", ""))
        try:
            with request_scope(request):
                if plan.timeout is None:
                    await self.app(scope, receive, send)
                else:
                    await self._within(plan.timeout, scope, receive, send)
        finally:
            if request.limit is not None and request.total > request.limit:
                _warn_about_queries(request)

    async def _within(self, seconds: float, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        budget = Deadline(seconds)

        async def send_then_disarm(message: Message) -> None:
            nonlocal started
            # The commit happens inside this send (TransactionMiddleware): still bounded.
            await send(message)
            if message["type"] == "http.response.start":
                started = True
                budget.disarm()

        try:
            async with budget:
                await self.app(scope, receive, send_then_disarm)
        except DeadlineExceededError as error:
            if started:
                raise
            await deadline_answer(error)(scope, receive, send)


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
