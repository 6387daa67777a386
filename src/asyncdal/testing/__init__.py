"""Testing aids shipped to users: fakes for fast unit tests and fixtures for a real database.

Fakes (no database):
    >>> products = InMemoryRepository.like(ProductRepository)
    >>> uow = FakeUnitOfWork({ProductRepository: products})
    >>> async with uow:
    ...     await uow.repository(ProductRepository).add(Product(sku="A", name="a", price=1))
    ...     await uow.commit()
    >>> uow.committed
    True

``FaultProxy`` (from :mod:`asyncdal.faultproxy`) sits between an app and its server and can
blackhole, reset or cut the link, for tests of failure behaviour.

Real database with per-test rollback: in ``conftest.py``::

    pytest_plugins = ["asyncdal.testing"]

    @pytest.fixture(scope="session")
    def asyncdal_metadata():
        return Base.metadata          # tables created in a throwaway database

then a test takes ``rollback_database`` (a ``Database`` whose every session runs inside one
transaction that is rolled back after the test; run such tests in the session's event loop).
``TEST_DATABASE_URL`` names the server (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from asyncdal.testing._all import (
    DEFAULT_TEST_DATABASE_URL,
    FakeOutbox,
    FakeUnitOfWork,
    FaultProxy,
    InMemoryRepository,
    ReplicaPair,
    ThrowawayCluster,
    asyncdal_database,
    asyncdal_metadata,
    asyncdal_replica_pair,
    asyncdal_test_url,
    create_test_database,
    drop_test_database,
    replica_pair,
    rollback_database,
    run_pgbouncer,
    spare_port,
    throwaway_cluster,
)

__all__ = [
    "DEFAULT_TEST_DATABASE_URL",
    "FakeOutbox",
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
]
