"""The one map from driver and SQLAlchemy errors onto asyncdal's, and the classifiers.

Errors reach asyncdal in several wrappings: asyncpg's own exceptions, ``OSError`` and
``TimeoutError`` from the socket, SQLAlchemy's adapter errors and ``DBAPIError`` around them.
:func:`translate` turns those an application has to tell apart into :mod:`asyncdal.errors`
(the engine applies it to every statement, COMMIT included, and to the pool's checkout); the
classifiers look through the wrappings (``.orig`` and ``__cause__``) so callers need not, and
keep working on translated errors, which keep the driver's exception as their ``__cause__``.

Example:
    >>> translate(error, database="main")    # UniqueViolationError(...) for a duplicate key
    >>> sqlstate(error)                      # '40001' for a serialization failure
    >>> is_connection_failure(error)         # True when the server could not be reached
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from sqlalchemy import exc

from asyncdal.errors import (
    AsyncdalError,
    ConflictError,
    ConnectionLostError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    DeadlockError,
    ForeignKeyViolationError,
    InvalidValueError,
    LockTimeoutError,
    PoolTimeoutError,
    QueryTimeoutError,
    ReadOnlyError,
    SerializationError,
    StatementTimeoutError,
    UniqueViolationError,
)

__all__ = [
    "LOCK_NOT_AVAILABLE",
    "QUERY_CANCELED",
    "RETRYABLE_CONFLICTS",
    "SERVER_BUSY",
    "closed_before_sending",
    "is_conflict",
    "is_connection_failure",
    "pool_exhausted",
    "sqlstate",
    "translate",
]

QUERY_CANCELED = "57014"
"""``statement_timeout`` (or a cancel request) stopped the statement."""
LOCK_NOT_AVAILABLE = "55P03"
"""``lock_timeout`` passed, or ``NOWAIT`` found the row locked."""
SERVER_BUSY = frozenset({"53300", "57P03"})
"""Too many connections, or the server is starting up: it answered, but took no work."""
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
RETRYABLE_CONFLICTS = frozenset({SERIALIZATION_FAILURE, DEADLOCK_DETECTED})
"""Serialization failure and deadlock: the transaction was rolled back and may run again."""
_UNIQUE_VIOLATION = "23505"
_FOREIGN_KEY_VIOLATION = "23503"
_READ_ONLY_TRANSACTION = "25006"

# Class 08 (connection exception), 57P01-57P03 (server shutting down or starting up) and
# 53300 (too many connections): the server did not take the work, so trying later may succeed.
_CONNECTION_STATES = ("08", "57P01", "57P02", *SERVER_BUSY)
# asyncpg's errors for a connection that is gone, by name, so that no private module is needed.
_CONNECTION_ERROR_NAMES = frozenset({"ConnectionDoesNotExistError", "ConnectionFailureError"})


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps (``.orig``, ``__cause__``), outermost first, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def sqlstate(error: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of ``error`` or of what it wraps, if it has one."""
    for inner in _chain(error):
        code = getattr(inner, "sqlstate", None) or getattr(inner, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_conflict(error: BaseException) -> bool:
    """True for a serialization failure (40001) or a deadlock (40P01), translated or not."""
    return isinstance(error, ConflictError) or sqlstate(error) in RETRYABLE_CONFLICTS


def is_connection_failure(error: BaseException) -> bool:
    """True when ``error`` means the server could not be reached or the connection broke.

    Covers refused and reset sockets, connect and command timeouts on the client side, a
    connection SQLAlchemy invalidated, asyncpg's "connection is closed", a server shutting
    down or starting up, too many connections, and :class:`DatabaseUnavailableError`. A pool
    checkout timeout (:class:`~asyncdal.errors.PoolTimeoutError`, or SQLAlchemy's
    ``TimeoutError`` it translates) is not one: the server is fine.
    """
    if isinstance(error, exc.TimeoutError | PoolTimeoutError):
        return False
    for inner in _chain(error):
        if isinstance(inner, DatabaseUnavailableError | OSError | TimeoutError):
            return True
        if isinstance(inner, exc.DBAPIError) and inner.connection_invalidated:
            return True
        code = getattr(inner, "sqlstate", None)
        if isinstance(code, str) and code.startswith(_CONNECTION_STATES):
            return True
        name = type(inner).__name__
        if name in _CONNECTION_ERROR_NAMES:
            return True
        if name == "InterfaceError" and _reports_closed(inner):
            return True
    return False


def _reports_closed(error: BaseException) -> bool:
    return "connection is closed" in str(error)


def closed_before_sending(error: BaseException) -> bool:
    """True when asyncpg refused to send because it already knew the connection was closed.

    asyncpg checks ``is_closed()`` before it sends anything and raises its ``InterfaceError``
    ("connection is closed", "... the underlying connection is closed") instead; a link lost
    while a message was on its way raises other errors (``ConnectionDoesNotExistError``, an
    ``OSError``). So for a COMMIT this tells "never sent: rolled back" from "outcome unknown".
    """
    return any(
        type(inner).__name__ == "InterfaceError"
        and type(inner).__module__.startswith("asyncpg")
        and _reports_closed(inner)
        for inner in _chain(error)
    )


def translate(
    error: BaseException, *, database: str, disconnected: bool = False
) -> AsyncdalError | None:
    """The asyncdal error that ``error`` (a driver or SQLAlchemy error) stands for, if any.

    The caller raises it ``from`` the original, so that the driver's exception stays its
    ``__cause__`` (and the classifiers here keep seeing through it). Errors asyncdal has no
    name for (a syntax error, a missing table) give None: they stay as they are.

    Args:
        error: what the driver (or SQLAlchemy's pool) raised.
        database: the database's name (and node), for the message and ``.database``.
        disconnected: SQLAlchemy found the connection unusable and discards it.

    Returns:
        The translated error, not raised yet; None when ``error`` is not one asyncdal maps.
    """
    if isinstance(error, AsyncdalError) or not isinstance(error, Exception):
        # Ours already, or a cancellation (BaseException) that must travel on unchanged.
        return None
    if isinstance(error, exc.TimeoutError):
        return pool_exhausted(error, database=database)
    if isinstance(error, TimeoutError):
        return QueryTimeoutError(
            f"a statement on {database!r} got no answer within COMMAND_TIMEOUT; "
            "its connection was discarded",
            database=database,
        )
    if disconnected:
        return ConnectionLostError(
            f"the connection to {database!r} was lost during a statement "
            f"({_innermost_name(error)}); the connection was discarded",
            database=database,
        )
    code = sqlstate(error)
    if code is None:
        return None
    if code in RETRYABLE_CONFLICTS:
        return _conflict(code, database)
    if code.startswith("23"):
        return _constraint_violation(error, code, database)
    if code.startswith("22"):
        return InvalidValueError(
            f"database {database!r}: invalid value: {_value_problem(error, code)} "
            f"(SQLSTATE {code})",
            database=database,
            sqlstate=code,
        )
    if code == QUERY_CANCELED:
        return StatementTimeoutError(
            f"database {database!r}: the server cancelled the statement (statement_timeout "
            "passed, or a cancel request); the transaction is aborted",
            database=database,
        )
    if code == LOCK_NOT_AVAILABLE:
        return LockTimeoutError(
            f"database {database!r}: a lock could not be obtained (lock_timeout passed, or "
            "NOWAIT found it taken); the transaction is aborted",
            database=database,
        )
    if code == _READ_ONLY_TRANSACTION:
        return ReadOnlyError(
            f"database {database!r}: a statement tried to write in a read-only transaction "
            "(a read-only unit of work, or a replica); write in a unit_of_work()"
        )
    return None


# SQLAlchemy's QueuePool message: "QueuePool limit of size 5 overflow 10 reached, connection
# timed out, timeout 30.00 (Background on ...)".
_POOL_LIMITS = re.compile(r"size (\d+) overflow (-?\d+) reached.*timeout ([\d.]+)")


def pool_exhausted(error: exc.TimeoutError, *, database: str) -> PoolTimeoutError:
    """The :class:`~asyncdal.errors.PoolTimeoutError` for SQLAlchemy's checkout timeout."""
    limits = _POOL_LIMITS.search(str(error))
    waited = (
        f" (waited {float(limits[3]):g} s; pool size {limits[1]}, overflow {limits[2]})"
        if limits
        else ""
    )
    return PoolTimeoutError(
        f"database {database!r}: the connection pool is exhausted: no connection became free "
        f"within POOL_TIMEOUT{waited}. Try again shortly; if it keeps happening, hold "
        "connections for less time or give the pool more (POOL_SIZE, MAX_OVERFLOW)",
        database=database,
    )


def _conflict(code: str, database: str) -> ConflictError:
    if code == SERIALIZATION_FAILURE:
        return SerializationError(
            f"database {database!r}: serialization failure: the transaction conflicted with "
            "concurrent work and was rolled back; running it again may succeed",
            database=database,
        )
    return DeadlockError(
        f"database {database!r}: deadlock detected: the transaction waited for locks held by "
        "another that waited for its own, and was rolled back; running it again may succeed",
        database=database,
    )


# PostgreSQL's detail of a key violation: 'Key (sku)=(ABC-1) already exists.', 'Key (parent)=
# (99) is not present in table "parents".' Only the column list is taken: the values after it
# could be anything, a secret included. Lazy, so that "Key (lower(email))=(...)" keeps its
# inner parentheses.
_KEY_COLUMNS = re.compile(r"^Key \((?P<columns>.+?)\)=\(")
_OTHER_TABLE = re.compile(
    r'(?P<how>is not present in|is still referenced from) table "(?P<table>[^"]+)"'
)


def _constraint_violation(
    error: BaseException, code: str, database: str
) -> ConstraintViolationError:
    constraint = _attribute(error, "constraint_name")
    table = _attribute(error, "table_name")
    detail = _attribute(error, "detail") or ""
    keys = _KEY_COLUMNS.match(detail)
    column = _attribute(error, "column_name")
    columns = tuple(keys["columns"].split(", ")) if keys else ((column,) if column else ())
    named = f" (constraint {constraint!r})" if constraint else ""
    shown = f"({', '.join(columns)})" if columns else "key"
    of_table = f" of table {table!r}" if table else ""
    kind: type[ConstraintViolationError]
    if code == _UNIQUE_VIOLATION:
        kind = UniqueViolationError
        in_table = f" in table {table!r}" if table else ""
        what = f"duplicate key: a row with the same {shown} already exists{in_table}"
    elif code == _FOREIGN_KEY_VIOLATION:
        kind = ForeignKeyViolationError
        other = _OTHER_TABLE.search(detail)
        if other and other["how"] == "is still referenced from":
            # ``table`` is the referencing one here too, and the key is the parent's.
            columns = ()
            what = f"a row it deletes or changes is still referenced from table {table!r}"
        else:
            parent = f" in table {other['table']!r}" if other else ""
            what = f"{shown}{of_table} refers to a row that does not exist{parent}"
        what = f"foreign key violation: {what}"
    else:
        kind = ConstraintViolationError
        condition = _condition_name(error) or "integrity constraint violation"
        in_table = f" in table {table!r}" if table else ""
        what = f"{condition}: {shown}{of_table}" if columns else f"{condition}{in_table}"
    return kind(
        f"database {database!r}: {what}{named}",
        database=database,
        sqlstate=code,
        constraint=constraint,
        table=table,
        columns=columns,
    )


# What a data exception (class 22) was, in words; the server's own message may quote the value.
_VALUE_PROBLEMS = {
    "22001": "a string is too long for its type",
    "22003": "a number is out of range for its type",
    "22004": "a null value is not allowed here",
    "22007": "a date or time is not in a valid format",
    "22008": "a date or time is out of range",
    "22012": "division by zero",
    "22021": "a string has a byte sequence that is not valid in the encoding",
    "22P02": "a value is not valid input for its type",
    "22P05": "a character cannot be represented in the database's encoding",
}
# Safe parts of messages that also quote the value: a type name, an argument's position, and
# asyncpg's own range check.
_INPUT_TYPE = re.compile(r"^invalid input syntax for type (?P<type>[a-z][a-z0-9 _]*):")
_ARGUMENT = re.compile(r"^invalid input for query argument (?P<position>\$\d+)")
_ARGUMENT_RANGE = re.compile(r"^value out of [a-z0-9]+ range$")


def _value_problem(error: BaseException, code: str) -> str:
    messages = [str(inner) for inner in _chain(error)]
    for message in messages:
        argument = _ARGUMENT.match(message)
        if argument:
            # asyncpg refused to encode an argument, before sending anything.
            why = next((f" ({reason})" for reason in messages if _ARGUMENT_RANGE.match(reason)), "")
            return f"query argument {argument['position']} does not fit its type{why}"
        input_type = _INPUT_TYPE.match(message)
        if input_type:
            return f"a value is not valid input for type {input_type['type']}"
    return _VALUE_PROBLEMS.get(code) or _condition_name(error) or "data exception"


def _attribute(error: BaseException, name: str) -> str | None:
    """The first string attribute ``name`` along the chain (asyncpg's diagnostics fields)."""
    for inner in _chain(error):
        value = getattr(inner, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def _condition_name(error: BaseException) -> str | None:
    """PostgreSQL's condition name, from asyncpg's class (``CheckViolationError``: "check
    violation"), where asyncpg raised one."""
    for inner in _chain(error):
        kind = type(inner)
        if kind.__module__.startswith("asyncpg") and getattr(inner, "sqlstate", None):
            words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", kind.__name__.removesuffix("Error"))
            return words.lower()
    return None


def _innermost_name(error: BaseException) -> str:
    *_, innermost = _chain(error)
    return type(innermost).__name__
