"""The exported names are the public contract: changing them must be deliberate."""

from __future__ import annotations

import importlib

import asyncdal

EXPECTED = {
    "asyncdal": [
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
    ],
    "asyncdal.fastapi": [
        "TransactionMiddleware",
        "databases_lifespan",
        "get_databases",
        "health_router",
        "metrics_router",
        "read_only_unit_of_work_provider",
        "repository_provider",
        "session_provider",
        "setup",
        "unit_of_work_provider",
    ],
    "asyncdal.container": [
        "DatabaseContainer",
        "container_lifespan",
        "open_databases",
        "repository_for",
    ],
    "asyncdal.check": ["Finding", "check_paths", "check_source"],
    "asyncdal.logs": ["LoggingSettings", "configure_logging"],
    "asyncdal.metrics": ["CONTENT_TYPE", "DatabaseMetrics"],
    "asyncdal.routing": [
        "ReplicaNode",
        "Router",
        "RoutingSession",
        "current_commit_lsns",
        "format_lsn",
        "parse_lsn",
        "read_your_writes",
        "required_lsn",
        "route",
    ],
    "asyncdal.replicas": ["REPLICA_STATE_QUERY", "ReplicaMonitor"],
    "asyncdal.budget": [
        "BudgetLine",
        "ServerBudget",
        "check_budget",
        "enforce_budget",
        "format_budget",
    ],
    "asyncdal.consistency": [
        "LSN_HEADER",
        "ReadYourWritesMiddleware",
        "prefer_replicas",
        "use_primary",
    ],
    "asyncdal.querylog": [
        "EXHAUSTION_THRESHOLD",
        "EXHAUSTION_WARNING_INTERVAL",
        "attach_query_log",
    ],
    "asyncdal.requestid": [
        "REQUEST_ID_HEADER",
        "RequestIdFilter",
        "RequestIdMiddleware",
        "current_request_id",
        "request_id_scope",
        "tag_connections_with_request_id",
    ],
    "asyncdal.testing": [
        "DEFAULT_TEST_DATABASE_URL",
        "FakeUnitOfWork",
        "FaultProxy",
        "InMemoryRepository",
        "ReplicaPair",
        "ThrowawayCluster",
        "asyncdal_database",
        "asyncdal_metadata",
        "asyncdal_replica_pair",
        "asyncdal_test_url",
        "create_test_database",
        "drop_test_database",
        "replica_pair",
        "rollback_database",
        "run_pgbouncer",
        "spare_port",
        "throwaway_cluster",
    ],
    "asyncdal.breaker": [
        "BREAKER_STATES",
        "BreakerState",
        "CircuitBreaker",
        "circuit_breaker",
    ],
    "asyncdal.faults": [
        "LOCK_NOT_AVAILABLE",
        "QUERY_CANCELED",
        "RETRYABLE_CONFLICTS",
        "SERVER_BUSY",
        "closed_before_sending",
        "is_conflict",
        "is_connection_failure",
        "sqlstate",
    ],
    "asyncdal.guard": [
        "ConnectionGuard",
        "GuardedPool",
        "attach_guard",
    ],
    "asyncdal.retry": [
        "RetryPolicy",
        "retry_dropped_reads",
        "run_in_transaction",
    ],
    "asyncdal.faultproxy": [
        "FaultProxy",
    ],
}


def test_exported_names_are_pinned() -> None:
    for module_name, names in EXPECTED.items():
        module = importlib.import_module(module_name)
        assert module.__all__ == names, module_name
        for name in names:
            assert hasattr(module, name), f"{module_name}.{name}"


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files(asyncdal).joinpath("py.typed").is_file()
