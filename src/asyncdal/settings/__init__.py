"""Settings for every named database, read from the environment and from ``.env``.

Each named database has its own block of variables, ``DB__<NAME>__<FIELD>`` (case-insensitive),
and ``DATABASE_URL`` is shorthand for ``DB__MAIN__URL``. A missing field falls back to that
database's own default, never to another database's value.

Example:
    >>> import os
    >>> os.environ["DATABASE_URL"] = "postgresql://app:s3cret@db.internal/catalog"
    >>> settings = load_settings()
    >>> settings.databases["main"].safe_url
    'postgresql+asyncpg://app:***@db.internal/catalog'
"""

from asyncdal.settings._load import AsyncdalSettings, load_settings
from asyncdal.settings._model import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    DatabaseSettings,
    PoolKind,
)

__all__ = [
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "AsyncdalSettings",
    "DatabaseSettings",
    "PoolKind",
    "load_settings",
]
