"""The app's lifespan: build the databases, warm them up, dispose of them; and find them."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from asyncdal.errors import UnitOfWorkError
from asyncdal.orm._databases import Databases

if TYPE_CHECKING:
    from asyncdal.observe._metrics import DatabaseMetrics

__all__ = ["Lifespan", "databases_lifespan", "get_databases"]

_STATE_KEY = "databases"

Lifespan = Callable[[FastAPI], Any]


def databases_lifespan(
    build: Callable[[], Databases | Awaitable[Databases]],
    *,
    warm_up: bool = True,
    metrics: DatabaseMetrics | None = None,
) -> Lifespan:
    """A FastAPI lifespan that builds the databases, warms them up, and disposes them.

    The registry (and the metrics) go in the lifespan state, where :func:`get_databases` and
    :func:`~asyncdal.fastapi.metrics_router` find them.

    Args:
        build: returns (or returns an awaitable of) the :class:`Databases` to serve.
        warm_up: open and check the pools at startup (turn off on AWS Lambda).
        metrics: instrument every database with these metrics.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        built = build()
        databases = await built if inspect.isawaitable(built) else built
        try:
            if metrics is not None:
                for database in databases.values():
                    metrics.instrument(database)
            if warm_up:
                await databases.warm_up()
            yield {_STATE_KEY: databases, "metrics": metrics}
        finally:
            await databases.dispose()

    return lifespan


def get_databases(request: Request) -> Databases:
    """The :class:`Databases` of the running app (a FastAPI dependency)."""
    # The scope's state itself: request.state wraps it in a new object on every call.
    state = request.scope.get("state")
    databases = state.get(_STATE_KEY) if isinstance(state, dict) else None
    if not isinstance(databases, Databases):
        raise UnitOfWorkError(
            "no databases in the app's lifespan state: use asyncdal.fastapi.databases_lifespan "
            "(or yield {'databases': ...} from your lifespan)"
        )
    return databases
