"""asyncdal: an async data-access layer for FastAPI services on PostgreSQL.

Built on SQLAlchemy 2 (asyncio) and asyncpg: settings per named database, engines with the right
pool for servers or AWS Lambda, units of work, typed repositories, read replicas, retries and
health checks. This package needs only the base install; the integrations live in their own
packages and extras: ``asyncdal.fastapi``, ``asyncdal.container`` (dependency-injector),
``asyncdal.metrics`` (Prometheus), ``asyncdal.outbox`` and ``asyncdal.testing``.

Example:
    >>> from asyncdal import Databases, load_settings
    >>> databases = Databases.from_settings(load_settings())
"""

from asyncdal._request_id import REQUEST_ID_HEADER, current_request_id, request_id_scope
from asyncdal.engine._create import create_engine
from asyncdal.engine._deadline import deadline
from asyncdal.engine._retry import RetryPolicy
from asyncdal.errors import (
    AsyncdalError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConflictError,
    ConnectionLostError,
    ConstraintViolationError,
    DatabaseUnavailableError,
    DeadlineExceededError,
    DeadlockError,
    ForeignKeyViolationError,
    InvalidQueryError,
    InvalidValueError,
    LazyLoadError,
    LockTimeoutError,
    NotCommittedError,
    NotFoundError,
    PoolTimeoutError,
    QueryTimeoutError,
    ReadOnlyError,
    SerializationError,
    StaleVersionError,
    StatementTimeoutError,
    UniqueViolationError,
    UnitOfWorkError,
    UnknownDatabaseError,
)
from asyncdal.observe._health import DatabaseHealth, HealthReport, check_database, check_health
from asyncdal.observe._logs import LoggingSettings, configure_logging
from asyncdal.observe._request_id import RequestIdFilter
from asyncdal.orm._budget import ExtraPool
from asyncdal.orm._database import Database
from asyncdal.orm._databases import Databases
from asyncdal.orm._pages import ListQuery, Page
from asyncdal.orm._repository import Repository
from asyncdal.orm._transaction import run_in_transaction
from asyncdal.orm._uow import UnitOfWork, current_unit_of_work
from asyncdal.replicas._lsn import read_your_writes
from asyncdal.settings import AsyncdalSettings, DatabaseSettings, PoolKind, load_settings

__all__ = [
    "REQUEST_ID_HEADER",
    "AsyncdalError",
    "AsyncdalSettings",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionLostError",
    "ConstraintViolationError",
    "Database",
    "DatabaseHealth",
    "DatabaseSettings",
    "DatabaseUnavailableError",
    "Databases",
    "DeadlineExceededError",
    "DeadlockError",
    "ExtraPool",
    "ForeignKeyViolationError",
    "HealthReport",
    "InvalidQueryError",
    "InvalidValueError",
    "LazyLoadError",
    "ListQuery",
    "LockTimeoutError",
    "LoggingSettings",
    "NotCommittedError",
    "NotFoundError",
    "Page",
    "PoolKind",
    "PoolTimeoutError",
    "QueryTimeoutError",
    "ReadOnlyError",
    "Repository",
    "RequestIdFilter",
    "RetryPolicy",
    "SerializationError",
    "StaleVersionError",
    "StatementTimeoutError",
    "UniqueViolationError",
    "UnitOfWork",
    "UnitOfWorkError",
    "UnknownDatabaseError",
    "check_database",
    "check_health",
    "configure_logging",
    "create_engine",
    "current_request_id",
    "current_unit_of_work",
    "deadline",
    "load_settings",
    "read_your_writes",
    "request_id_scope",
    "run_in_transaction",
]
