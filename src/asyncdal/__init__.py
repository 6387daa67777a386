"""asyncdal: an async data-access layer for FastAPI services on PostgreSQL.

Built on SQLAlchemy 2 (asyncio) and asyncpg: settings per named database, engines with the right
pool for servers or AWS Lambda, units of work, typed repositories, and FastAPI integration
(``asyncdal.fastapi``), dependency-injector wiring (``asyncdal.container``) and testing aids
(``asyncdal.testing``) in their own modules, which need their optional extras.
"""

from asyncdal.breaker import BreakerState, CircuitBreaker, circuit_breaker
from asyncdal.database import Database, Databases
from asyncdal.engine import (
    GuardedNullPool,
    TimedQueuePool,
    connect_arguments,
    create_engine,
    server_timeouts,
    statement_timeout_ms,
)
from asyncdal.errors import (
    AsyncdalError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidQueryError,
    NotCommittedError,
    QueryTimeoutError,
    ReadOnlyError,
    UnitOfWorkError,
    UnknownDatabaseError,
)
from asyncdal.health import DatabaseHealth, HealthReport, check_database, check_health
from asyncdal.logs import LoggingSettings, configure_logging
from asyncdal.replicas import ReplicaMonitor
from asyncdal.repository import Repository
from asyncdal.requestid import (
    REQUEST_ID_HEADER,
    RequestIdFilter,
    RequestIdMiddleware,
    current_request_id,
    request_id_scope,
)
from asyncdal.retry import RetryPolicy, run_in_transaction
from asyncdal.routing import ReplicaNode, format_lsn, parse_lsn, read_your_writes
from asyncdal.settings import (
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    AsyncdalSettings,
    DatabaseSettings,
    PoolKind,
    load_settings,
)
from asyncdal.uow import UnitOfWork, current_unit_of_work

__all__ = [
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "REQUEST_ID_HEADER",
    "AsyncdalError",
    "AsyncdalSettings",
    "BreakerState",
    "CircuitBreaker",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "Database",
    "DatabaseHealth",
    "DatabaseSettings",
    "DatabaseUnavailableError",
    "Databases",
    "GuardedNullPool",
    "HealthReport",
    "InvalidQueryError",
    "LoggingSettings",
    "NotCommittedError",
    "PoolKind",
    "QueryTimeoutError",
    "ReadOnlyError",
    "ReplicaMonitor",
    "ReplicaNode",
    "Repository",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "RetryPolicy",
    "TimedQueuePool",
    "UnitOfWork",
    "UnitOfWorkError",
    "UnknownDatabaseError",
    "check_database",
    "check_health",
    "circuit_breaker",
    "configure_logging",
    "connect_arguments",
    "create_engine",
    "current_request_id",
    "current_unit_of_work",
    "format_lsn",
    "load_settings",
    "parse_lsn",
    "read_your_writes",
    "request_id_scope",
    "run_in_transaction",
    "server_timeouts",
    "statement_timeout_ms",
]
