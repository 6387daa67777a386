"""The pytest plugin of asyncdal: a throwaway database with your tables, and per-test rollback.

Load it from your ``conftest.py`` (it needs the ``testing`` extra: pytest and pytest-asyncio)::

    pytest_plugins = ["asyncdal.testing.plugin"]

    @pytest.fixture(scope="session")
    def asyncdal_metadata():
        return Base.metadata          # tables created in a throwaway database

then a test takes ``rollback_database``: a ``Database`` whose every session runs inside one
transaction that is rolled back after the test (run such tests in the session's event loop).

Fixtures:
    asyncdal_test_url: the server the databases are created on: ``TEST_DATABASE_URL``, else
        ``postgresql://postgres@127.0.0.1:5432/postgres``. Override it to choose another.
    asyncdal_metadata: override it to return the ``MetaData`` to create (default: none).
    asyncdal_database: a ``Database`` on a throwaway database with those tables, for the whole
        session; dropped at the end.
    rollback_database: ``asyncdal_database`` with everything a test does rolled back.
    asyncdal_replica_pair: a real primary and streaming replica for the session (see
        :func:`asyncdal.testing.replica_pair`).

The fakes and harnesses in :mod:`asyncdal.testing` need no pytest; only this module does.
"""

from asyncdal.testing._fixtures import (
    asyncdal_database,
    asyncdal_metadata,
    asyncdal_replica_pair,
    asyncdal_test_url,
    rollback_database,
)

__all__ = [
    "asyncdal_database",
    "asyncdal_metadata",
    "asyncdal_replica_pair",
    "asyncdal_test_url",
    "rollback_database",
]
