"""Settings for every named database, read from the environment and from ``.env``.

Each named database has its own block of variables, ``DB__<NAME>__<FIELD>`` (case-insensitive),
and ``DATABASE_URL`` is shorthand for ``DB__MAIN__URL``. A missing field falls back to that
database's own default, never to another database's value.

:class:`DatabaseSettings` keeps the connection fields (``url``, the parts, ``application_name``,
``optional``, ``strict_budget``) at its top and groups the rest by concern, each group a frozen
model of its own: ``pool``, ``timeouts``, ``retry``, ``breaker``, ``replicas``,
``observability`` and ``pooler``. The variables keep their flat names: ``DB__MAIN__POOL_SIZE``
is ``settings.pool.size``, ``DB__MAIN__CONNECT_TIMEOUT`` is ``settings.timeouts.connect``.

Example:
    >>> import os
    >>> os.environ["DATABASE_URL"] = "postgresql://app:s3cret@db.internal/catalog"
    >>> settings = load_settings()
    >>> settings.databases["main"].safe_url
    'postgresql+asyncpg://app:***@db.internal/catalog'
"""

from asyncdal.settings._groups import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    BreakerSettings,
    ObservabilitySettings,
    PoolerSettings,
    PoolKind,
    PoolSettings,
    ReplicaSettings,
    RetrySettings,
    SafetySettings,
    TimeoutSettings,
)
from asyncdal.settings._load import AsyncdalSettings, load_settings
from asyncdal.settings._model import DatabaseSettings

__all__ = [
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "AsyncdalSettings",
    "BreakerSettings",
    "DatabaseSettings",
    "ObservabilitySettings",
    "PoolKind",
    "PoolSettings",
    "PoolerSettings",
    "ReplicaSettings",
    "RetrySettings",
    "SafetySettings",
    "TimeoutSettings",
    "load_settings",
]
