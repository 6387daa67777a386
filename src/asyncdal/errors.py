"""The exceptions asyncdal raises on purpose.

Every error asyncdal raises for a reason of its own derives from :class:`AsyncdalError`, so an
application can map the whole family in one exception handler.
"""

from __future__ import annotations

__all__ = [
    "AsyncdalError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "InvalidQueryError",
    "NotCommittedError",
    "QueryTimeoutError",
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


class DatabaseUnavailableError(AsyncdalError, ConnectionError):
    """The database cannot be reached, or its circuit breaker is open and fails fast.

    The FastAPI integration answers 503 with ``Retry-After``.

    Attributes:
        database: the name of the database (and node, e.g. ``main`` or ``main/replica-1``).
        retry_after: seconds after which trying again makes sense (the breaker's cool-down
            left), or None when unknown.
    """

    def __init__(self, message: str, *, database: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.database = database
        self.retry_after = retry_after


class _OfDatabaseError(AsyncdalError):
    """An error about one database, whose name it keeps in ``database``."""

    def __init__(self, message: str, *, database: str) -> None:
        super().__init__(message)
        self.database = database


class CommitOutcomeUnknownError(_OfDatabaseError):
    """The connection failed while COMMIT was in flight: the transaction may or may not have
    been committed. Never retried automatically; the FastAPI integration answers 503 saying
    so. Make such writes safe to repeat (an idempotency key) and let the client retry.

    Attributes:
        database: the name of the database.
    """


class NotCommittedError(_OfDatabaseError):
    """The connection was already closed when COMMIT was to be sent (the server ended the
    session: ``idle_in_transaction_session_timeout``, ``pg_terminate_backend``, a restart), so
    COMMIT was never sent and the server rolled the transaction back: nothing was saved, and
    repeating the whole unit of work is safe. The FastAPI integration answers 503.

    Attributes:
        database: the name of the database.
    """


class QueryTimeoutError(_OfDatabaseError, TimeoutError):
    """A statement got no answer within ``COMMAND_TIMEOUT`` (asyncpg's client-side limit).

    Its connection is discarded (its state is unknown). The FastAPI integration answers 504.

    Attributes:
        database: the name of the database.
    """
