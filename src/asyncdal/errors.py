"""The exceptions asyncdal raises on purpose.

Every error asyncdal raises for a reason of its own derives from :class:`AsyncdalError`, so an
application can map the whole family in one exception handler.
"""

from __future__ import annotations

__all__ = [
    "AsyncdalError",
    "ConfigurationError",
    "InvalidQueryError",
    "ReadOnlyError",
    "UnitOfWorkError",
    "UnknownDatabaseError",
]


class AsyncdalError(Exception):
    """Base class of asyncdal's own errors."""


class ConfigurationError(AsyncdalError, ValueError):
    """The settings are unusable; the message names each offending environment variable.

    Messages never contain a password or a full URL.
    """


class UnknownDatabaseError(ConfigurationError, KeyError):
    """No database of that name is configured (also a ``KeyError``, as a mapping lookup)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidQueryError(AsyncdalError, ValueError):
    """A repository query asked for a column, operator or page size that is not allowed.

    The FastAPI integration turns it into a 422 response.
    """


class UnitOfWorkError(AsyncdalError, RuntimeError):
    """A unit of work was used in a way that cannot be honoured (closed, nested badly)."""


class ReadOnlyError(UnitOfWorkError):
    """Something tried to write or commit through a read-only unit of work."""
