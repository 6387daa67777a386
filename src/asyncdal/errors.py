"""The exceptions asyncdal raises on purpose.

Every error asyncdal raises for a reason of its own derives from :class:`AsyncdalError`, so an
application can map the whole family in one exception handler. The database's own failures that
an application has to tell apart (a pool that is exhausted, a serialization failure or a
deadlock, a duplicate key, a missing parent row, a value out of range, a statement or lock
timeout, a lost connection) arrive as members of this family too, not as SQLAlchemy's or
asyncpg's exceptions: ``asyncdal._translate`` maps them where they arise, and each keeps the
driver's exception as its ``__cause__``.

Example:
    >>> try:
    ...     await uow.commit()
    ... except UniqueViolationError as error:
    ...     print(error.constraint)                  # 'products_sku_key'
"""

from __future__ import annotations

__all__ = [
    "AsyncdalError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionLostError",
    "ConstraintViolationError",
    "DatabaseUnavailableError",
    "DeadlineExceededError",
    "DeadlockError",
    "ForeignKeyViolationError",
    "InvalidQueryError",
    "InvalidValueError",
    "LazyLoadError",
    "LockTimeoutError",
    "NotCommittedError",
    "NotFoundError",
    "PoolTimeoutError",
    "QueryTimeoutError",
    "ReadOnlyError",
    "SerializationError",
    "StaleVersionError",
    "StatementTimeoutError",
    "UniqueViolationError",
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

    The FastAPI integration turns it into a 422 in FastAPI's validation-error shape, naming
    ``parameter`` when it is known.

    Attributes:
        parameter: the query parameter that carried the refused value (``sort``), when the
            code that raised it knows; None otherwise.
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class NotFoundError(AsyncdalError, LookupError):
    """No object has the key asked for (``Repository.get_one``). The FastAPI integration
    answers 404.

    Attributes:
        model: the name of the mapped class, e.g. ``Post``.
        ident: the primary key that was asked for.
    """

    def __init__(self, message: str, *, model: str, ident: object) -> None:
        super().__init__(message)
        self.model = model
        self.ident = ident


class StaleVersionError(AsyncdalError):
    """An object changed since the version the caller saw: optimistic concurrency refused the
    write. Nothing of it was saved; read the object again, then decide.

    Raised when the version a caller expects (``Repository.update(..., expected_version=)``,
    an ``If-Match`` header) is not the stored one, and when an ``UPDATE`` or ``DELETE`` of a
    model with a version column (``__mapper_args__ = {"version_id_col": ...}``) finds that
    another transaction changed the row first. The FastAPI integration answers 412.

    Attributes:
        model: the name of the mapped class, when known.
        expected: the version the caller expected, when known.
        actual: the stored version, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        expected: object = None,
        actual: object = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.expected = expected
        self.actual = actual


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


class ConnectionLostError(DatabaseUnavailableError):
    """The connection broke while a statement (or COMMIT, or ROLLBACK) was on it: the server
    restarted, the backend was terminated, the network cut it. The connection is discarded;
    the transaction on it is gone. The FastAPI integration answers 503 with ``Retry-After``.

    A COMMIT that fails this way surfaces from ``UnitOfWork.commit()`` as
    :class:`CommitOutcomeUnknownError` or :class:`NotCommittedError` instead (this error is then
    their ``__cause__``).

    Attributes:
        database: the name of the database.
        retry_after: None (a new connection may work at once).
    """


class PoolTimeoutError(_OfDatabaseError):
    """No pooled connection became free within ``POOL_TIMEOUT``: the pool is exhausted.

    The server is fine (this counts neither against the circuit breaker nor as a connection
    failure); every connection of this process was busy. Trying again shortly usually works;
    when it keeps happening, transactions hold connections too long or the pool is too small
    (``POOL_SIZE``, ``MAX_OVERFLOW``). The FastAPI integration answers 503 with ``Retry-After``.

    Attributes:
        database: the name of the database.
        retry_after: seconds after which trying again makes sense.
    """

    def __init__(self, message: str, *, database: str, retry_after: float = 1.0) -> None:
        super().__init__(message, database=database)
        self.retry_after = retry_after


class StatementTimeoutError(_OfDatabaseError):
    """The server cancelled a statement (SQLSTATE 57014): it ran past ``statement_timeout``, or
    someone cancelled it (``pg_cancel_backend``). The transaction is aborted; the connection is
    fine. The FastAPI integration answers 504.

    Unlike :class:`QueryTimeoutError` (the client stopped waiting; the connection is discarded)
    it is not a ``TimeoutError``: the server answered.

    Attributes:
        database: the name of the database.
    """


class DeadlineExceededError(AsyncdalError, TimeoutError):
    """The time of a :func:`asyncdal.deadline` (or ``REQUEST_TIMEOUT``) ran out: waiting for a
    connection, in a statement (which the server was asked to cancel) or before one. The
    transaction is rolled back when the unit of work closes; nothing keeps running on the
    server. The FastAPI integration answers 504.

    Attributes:
        seconds: the deadline's budget, in seconds.
    """

    def __init__(self, message: str, *, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class LazyLoadError(AsyncdalError):
    """An attribute not loaded yet would have been loaded by a statement of its own (a lazy
    load), which ``LAZY_LOADS=raise`` refuses: in async code it cannot run unawaited
    (SQLAlchemy's ``MissingGreenlet``), and run in a loop it is an N+1 pattern. The message
    names the attribute and the loader option that loads it with the query instead
    (``selectinload``, ``joinedload``).

    Example:
        >>> select(Author).options(selectinload(Author.books))

    Attributes:
        attribute: ``Model.attribute``.
        option: the loader option suggested, e.g. ``selectinload(Author.books)``.
    """

    def __init__(self, message: str, *, attribute: str, option: str) -> None:
        super().__init__(message)
        self.attribute = attribute
        self.option = option


class LockTimeoutError(_OfDatabaseError):
    """A lock could not be had (SQLSTATE 55P03): ``lock_timeout`` passed, or ``NOWAIT`` found
    the row locked. The transaction is aborted. The FastAPI integration answers 503 with
    ``Retry-After``.

    Attributes:
        database: the name of the database.
    """


class ConflictError(_OfDatabaseError):
    """The transaction conflicted with concurrent work and the server rolled it back.

    Running the whole transaction again may succeed: ``run_in_transaction(...,
    idempotent=True)`` does so. In a plain request the FastAPI integration answers 503 with
    ``Retry-After``.

    Attributes:
        database: the name of the database.
    """


class SerializationError(ConflictError):
    """A serialization failure (SQLSTATE 40001): under ``REPEATABLE READ`` or ``SERIALIZABLE``
    the transaction read or wrote data that concurrent transactions changed.

    Attributes:
        database: the name of the database.
    """


class DeadlockError(ConflictError):
    """A deadlock (SQLSTATE 40P01): this transaction and another waited for each other's locks,
    and the server rolled this one back.

    Attributes:
        database: the name of the database.
    """


class ConstraintViolationError(_OfDatabaseError):
    """A write broke a constraint of the database (SQLSTATE class 23): nothing of the statement
    was saved, and the transaction is aborted.

    Raised as such for check, not-null and exclusion constraints (the FastAPI integration
    answers 422); a duplicate key and a missing parent have subclasses of their own (409).
    The message names the constraint, the table and the columns, never the values.

    Attributes:
        database: the name of the database.
        sqlstate: the SQLSTATE, e.g. ``23514`` for a check constraint.
        constraint: the constraint's name, when the server gave it.
        table: the constraint's table, when the server gave it (for a foreign key, the
            referencing table, also when a parent row was deleted).
        columns: the columns of ``table`` in the key, or the not-null column, when known
            (else empty).
    """

    def __init__(
        self,
        message: str,
        *,
        database: str,
        sqlstate: str,
        constraint: str | None = None,
        table: str | None = None,
        columns: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, database=database)
        self.sqlstate = sqlstate
        self.constraint = constraint
        self.table = table
        self.columns = columns


class UniqueViolationError(ConstraintViolationError):
    """A duplicate key (SQLSTATE 23505): a row with the same value of a unique constraint or
    index exists already. The FastAPI integration answers 409 naming the constraint.

    Attributes:
        constraint: the unique constraint (or index), e.g. ``products_sku_key``.
    """


class ForeignKeyViolationError(ConstraintViolationError):
    """A foreign key was broken (SQLSTATE 23503): a row refers to a parent that does not exist,
    or a parent still referred to was deleted or changed. The FastAPI integration answers 409
    naming the constraint.

    Attributes:
        constraint: the foreign key, e.g. ``children_parent_fkey``.
    """


class InvalidValueError(_OfDatabaseError):
    """The database refused a value (SQLSTATE class 22, a data exception): a number out of
    range for its type, a date that does not exist, text that is not a valid number, a string
    too long for its column, a query argument that does not fit its parameter's type.

    The message names the problem, never the value (it could be a secret). The FastAPI
    integration answers 422.

    Attributes:
        database: the name of the database.
        sqlstate: the SQLSTATE, e.g. ``22003`` for a numeric value out of range.
    """

    def __init__(self, message: str, *, database: str, sqlstate: str) -> None:
        super().__init__(message, database=database)
        self.sqlstate = sqlstate
