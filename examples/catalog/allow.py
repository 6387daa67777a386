"""A 405 names every method its path takes in ``Allow``, as HTTP requires (RFC 9110, 15.5.6).

Starlette answers a method that a path does not take from the first route of that path, and
that route's ``Allow`` names only its own methods: ``OPTIONS /products`` said ``Allow: GET``
although ``POST /products`` exists too. :func:`add_allow_header_handler` answers a 405 with the
methods of every route that matches the path.

An exception handler rather than a middleware: the routing raises the 405, so only a request
that gets one pays for it (a middleware costs every request a layer and a ``send`` wrapper).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import fastapi.routing
from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

__all__ = ["add_allow_header_handler", "allowed_methods"]


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


def add_allow_header_handler(app: FastAPI) -> None:
    """Answer an HTTP error as FastAPI does, a 405 with ``Allow`` naming every method its path
    takes (routes included later count too: they are read when a 405 is answered)."""

    async def answer(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        response = await http_exception_handler(request, error)
        if error.status_code == 405:
            methods = allowed_methods(app.router.routes, request.scope)
            if methods:
                response.headers["Allow"] = ", ".join(sorted(methods))
        return response

    app.add_exception_handler(HTTPException, answer)
