"""The app's OpenAPI document, completed with the answers :func:`~asyncdal.fastapi.setup`
installs.

FastAPI documents what a route declares; the answers asyncdal's middlewares and error handlers
give are added here, each where it can happen:

- every operation: the optional ``X-DB-LSN`` header, the 400 for one that is not a WAL
  position, and the JSON 500 (with ``X-Request-ID``);
- every operation that depends on a database provider (``repository_provider``,
  ``unit_of_work_provider``, ...): the 503 (``Retry-After``) and the 504; with a read-write
  unit of work, the 500 of a commit that failed too.

A status the route documents itself is left as the route says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from asyncdal.errors import ConfigurationError
from asyncdal.fastapi._consistency import LSN_HEADER, LSN_PATTERN
from asyncdal.fastapi._providers import RequestUnitOfWork, provided_unit_of_work
from asyncdal.fastapi._responses import (
    CommitFailed,
    ErrorDetail,
    InternalError,
    ServiceUnavailable,
    answer_for_status,
)

__all__ = ["document_answers"]

_REF = "#/components/schemas/{model}"


def document_answers(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) describe asyncdal's answers too."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    # The last document completed: FastAPI caches its document, and builds a new one when
    # routes were added since; each new one is completed once, before anyone sees it.
    completed: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if not completed or completed[0] is not document:
            complete(document, app.routes)
            completed[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any], routes: Sequence[BaseRoute]) -> None:
    """Add asyncdal's answers to ``document`` (FastAPI's OpenAPI of ``routes``), in place."""
    used: set[type[BaseModel]] = set()
    paths = document.get("paths", {})
    for route in _api_routes(routes):
        providers = list(_providers(route.dependant))
        for method in sorted(route.methods or ()):
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is not None:
                used |= _complete_operation(operation, providers)
    if used:
        _add_components(document, used)


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[Any]:
    """The documented FastAPI routes, with the path and dependencies they are served with."""
    # FastAPI 0.16x keeps included routers as such and gives each route's effective path and
    # dependencies through iter_route_contexts; before, app.routes were the routes themselves.
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    found: Iterable[Any] = contexts(routes) if contexts is not None else routes
    for route in found:
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute) and route.include_in_schema:
            yield route


def _complete_operation(
    operation: dict[str, Any], providers: list[RequestUnitOfWork]
) -> set[type[BaseModel]]:
    parameters = operation.setdefault("parameters", [])
    if not any(
        parameter.get("in") == "header" and parameter.get("name", "").lower() == "x-db-lsn"
        for parameter in parameters
    ):
        parameters.append(
            {
                "name": LSN_HEADER,
                "in": "header",
                "required": False,
                "description": "Read your writes: the X-DB-LSN of an earlier answer; reads are "
                "then served only by a node that has replayed that commit.",
                # The format names what it is (PostgreSQL's type); the pattern says what is
                # taken.
                "schema": {"type": "string", "format": "pg_lsn", "pattern": LSN_PATTERN},
            }
        )
    answers = [answer_for_status(400, (ErrorDetail,))]
    if any(not provider.read_only for provider in providers):
        answers.append(answer_for_status(500, (InternalError, CommitFailed)))
    else:
        answers.append(answer_for_status(500, (InternalError,)))
    if providers:
        answers.append(answer_for_status(503, (ServiceUnavailable,)))
        answers.append(answer_for_status(504, (ErrorDetail,)))
    responses = operation.setdefault("responses", {})
    used: set[type[BaseModel]] = set()
    for answer in answers:
        if str(answer.status) in responses:
            continue
        refs = [{"$ref": _REF.format(model=model.__name__)} for model in answer.models]
        response: dict[str, Any] = {
            "description": answer.description,
            "content": {
                "application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}
            },
        }
        if answer.headers:
            response["headers"] = dict(answer.headers)
        responses[str(answer.status)] = response
        used.update(answer.models)
    # In the order of the statuses, as people read them.
    operation["responses"] = dict(sorted(responses.items()))
    return used


def _providers(dependant: Dependant) -> Iterator[RequestUnitOfWork]:
    """The database providers ``dependant`` depends on, however deep."""
    for dependency in dependant.dependencies:
        provided = provided_unit_of_work(dependency.call)
        if provided is not None:
            yield provided
        yield from _providers(dependency)


def _add_components(document: dict[str, Any], models: set[type[BaseModel]]) -> None:
    """Add the models' schemas (as FastAPI would render them for a response) to ``document``."""
    ordered = sorted(models, key=lambda model: model.__name__)
    _, definitions = models_json_schema(
        [(model, "serialization") for model in ordered], ref_template=_REF
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in definitions.get("$defs", {}).items():
        existing = schemas.setdefault(name, schema)
        if existing != schema:
            # A model of the app's own with the same name: the answers would be documented
            # with the wrong body.
            raise ConfigurationError(
                f"the app's OpenAPI already has a schema named {name!r} that is not asyncdal's; "
                "rename the app's model"
            )
