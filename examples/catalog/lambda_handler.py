"""The catalog on AWS Lambda, through Mangum, on ``NullPool``.

Lambda freezes the process between invocations, and any pooled connection may be dead when it
thaws; with no pool every invocation opens its connection and closes it before returning.
Configure the handler as ``catalog.lambda_handler.handler``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from dependency_injector import providers
from mangum import Mangum

from asyncdal import AsyncdalSettings
from catalog.app import create_app
from catalog.container import CatalogContainer, load_catalog_settings

__all__ = ["create_handler", "default_handler", "handler", "lambda_settings"]


def lambda_settings(settings: AsyncdalSettings | None = None) -> AsyncdalSettings:
    """``settings`` (default: from the environment, with the catalog's defaults) with every
    database on a null pool."""
    settings = settings if settings is not None else load_catalog_settings()
    databases = {name: database.with_null_pool() for name, database in settings.databases.items()}
    return settings.model_copy(update={"db": databases})


def create_handler(settings: AsyncdalSettings | None = None) -> Any:
    """A Mangum handler around the catalog app, with null pools and no warm-up.

    Args:
        settings: the settings to use; read from the environment at the first invocation
            when omitted.
    """
    container = CatalogContainer()
    container.settings.override(providers.Singleton(lambda_settings, settings))
    container.warm_up.override(providers.Object(False))
    return Mangum(create_app(container), lifespan="auto")


@cache
def default_handler() -> Any:
    """The handler :func:`handler` delegates to: built once, at the first invocation."""
    return create_handler()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point: :func:`default_handler`, settings from the environment.

    Lambda imports this module once per container and calls ``handler`` per invocation. Nothing
    is built at import: Mangum's constructor takes (and, when there is none, creates and sets)
    the thread's event loop, which an import outside the Lambda runtime (a test, a script) would
    leak. No engine is kept between invocations either: the app's lifespan builds and disposes
    it in each one.
    """
    response: dict[str, Any] = default_handler()(event, context)
    return response
