"""The exported names are the public contract: changing them must be deliberate."""

from __future__ import annotations

import importlib

import asyncdal

EXPECTED = {
    "asyncdal": [
        "DEFAULT_MAX_OVERFLOW",
        "DEFAULT_POOL_SIZE",
        "AsyncdalError",
        "AsyncdalSettings",
        "ConfigurationError",
        "Database",
        "DatabaseHealth",
        "DatabaseSettings",
        "Databases",
        "HealthReport",
        "InvalidQueryError",
        "PoolKind",
        "ReadOnlyError",
        "Repository",
        "TimedQueuePool",
        "UnitOfWork",
        "UnitOfWorkError",
        "UnknownDatabaseError",
        "check_database",
        "check_health",
        "connect_arguments",
        "create_engine",
        "current_unit_of_work",
        "load_settings",
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
    "asyncdal.outbox": [
        "ANY_EVENT",
        "INBOX_TABLE",
        "NOTIFY_CHANNEL",
        "OUTBOX_TABLE",
        "HandlerSpec",
        "Handlers",
        "Outbox",
        "OutboxEvent",
        "OutboxMetrics",
        "OutboxSettings",
        "OutboxWorker",
        "RabbitRelay",
        "WorkerStats",
        "first_delivery",
        "load_outbox_settings",
        "outbox_tables",
    ],
    "asyncdal.metrics": ["CONTENT_TYPE", "DatabaseMetrics"],
    "asyncdal.querylog": [
        "EXHAUSTION_THRESHOLD",
        "EXHAUSTION_WARNING_INTERVAL",
        "attach_query_log",
    ],
    "asyncdal.testing": [
        "DEFAULT_TEST_DATABASE_URL",
        "FakeOutbox",
        "FakeUnitOfWork",
        "InMemoryRepository",
        "ThrowawayCluster",
        "asyncdal_database",
        "asyncdal_metadata",
        "asyncdal_test_url",
        "create_test_database",
        "drop_test_database",
        "rollback_database",
        "run_pgbouncer",
        "spare_port",
        "throwaway_cluster",
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
