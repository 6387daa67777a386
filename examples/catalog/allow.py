"""A 405 names every method its path takes in ``Allow``, as HTTP requires (RFC 9110, 15.5.6).

Starlette answers a method that a path does not take from the first route of that path, and
that route's ``Allow`` names only its own methods: ``OPTIONS /products`` said ``Allow: GET``
although ``POST /products`` exists too. :class:`AllowHeaderMiddleware` rewrites the header of
such an answer with the methods of every route that matches the path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import fastapi.routing
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AllowHeaderMiddleware", "allowed_methods"]


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> set[str]:
    """The methods of every route that matches the request's path, whatever its method."""
    # FastAPI 0.16x keeps included routers as such and gives their routes, with the prefix
    # applied, through iter_route_contexts; before, a router's routes were the routes.
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    found: Iterable[Any] = contexts(list(routes)) if contexts is not None else routes
    methods: set[str] = set()
    for route in found:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


class AllowHeaderMiddleware:
    """Give a 405 an ``Allow`` header naming every method its path takes (pure ASGI).

    Args:
        app: the ASGI app.
        router: the app's router, whose routes are read when a 405 is answered (so routes
            included after the middleware count too).
    """

    def __init__(self, app: ASGIApp, router: Router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = allowed_methods(self.router.routes, scope)
                if methods:
                    headers = [
                        (key, value)
                        for key, value in message.get("headers", [])
                        if key.lower() != b"allow"
                    ]
                    headers.append((b"allow", ", ".join(sorted(methods)).encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_allow)
