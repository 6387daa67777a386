"""Testing aids shipped to users: fakes for fast unit tests and real servers for the others.

Nothing here imports pytest: the fakes serve any test runner, the harnesses a benchmark or a
script too. The pytest fixtures live in the plugin :mod:`asyncdal.testing.plugin`.

Fakes (no database):
    >>> products = InMemoryRepository.like(ProductRepository)
    >>> uow = FakeUnitOfWork({ProductRepository: products})
    >>> async with uow:
    ...     await uow.repository(ProductRepository).add(Product(sku="A", name="a", price=1))
    ...     await uow.commit()
    >>> uow.committed
    True

Real servers: :func:`throwaway_cluster` (a cluster of the test's own, to stop, crash and
restart), :func:`replica_pair` (a primary and a streaming replica), :func:`pgbouncer`
(transaction mode; pause, resume, restart) or :func:`run_pgbouncer` (its port),
:func:`create_test_database` / :func:`drop_test_database` (a uniquely named database on a
server you name, such as :data:`DEFAULT_TEST_DATABASE_URL`), :func:`spare_port`.

:class:`FaultProxy` sits between an app and its server and can blackhole, reset or cut the
link, for tests of failure behaviour.

:func:`assert_max_queries` fails a test whose block ran more statements than it allows
(an N+1 pattern shows as one statement listed over and over).

Providers replaced by fakes, by name (needs the ``fastapi`` extra):
:func:`override` makes ``repository_provider(ProductRepository)`` everywhere in an app hand out
an in-memory repository inside a :class:`FakeUnitOfWork` that the commit middleware commits.

Real database with per-test rollback, and an HTTP client on your app: the pytest plugin
:mod:`asyncdal.testing.plugin`, which loads by itself once ``asyncdal[testing]`` is installed.
"""

import typing

from asyncdal.testing._fakes import FakeOutbox, FakeUnitOfWork
from asyncdal.testing._faultproxy import FaultProxy
from asyncdal.testing._memory import InMemoryRepository
from asyncdal.testing._pgbouncer import PgBouncer, pgbouncer, run_pgbouncer
from asyncdal.testing._queries import assert_max_queries
from asyncdal.testing._servers import (
    DEFAULT_TEST_DATABASE_URL,
    ReplicaPair,
    ThrowawayCluster,
    create_test_database,
    drop_test_database,
    replica_pair,
    spare_port,
    throwaway_cluster,
)

if typing.TYPE_CHECKING:
    from asyncdal.testing._overrides import override

# Imported when first used: it needs FastAPI (the ``fastapi`` extra); the fakes do not.
_LAZY = {"override": "asyncdal.testing._overrides"}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncdal.testing' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_TEST_DATABASE_URL",
    "FakeOutbox",
    "FakeUnitOfWork",
    "FaultProxy",
    "InMemoryRepository",
    "PgBouncer",
    "ReplicaPair",
    "ThrowawayCluster",
    "assert_max_queries",
    "create_test_database",
    "drop_test_database",
    "override",
    "pgbouncer",
    "replica_pair",
    "run_pgbouncer",
    "spare_port",
    "throwaway_cluster",
]
