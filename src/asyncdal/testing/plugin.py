"""The pytest plugin of asyncdal: a throwaway database with your tables, per-test rollback, and
an HTTP client on your app whose every commit is rolled back after the test.

Installed with ``asyncdal[testing]``, it loads by itself (the ``pytest11`` entry point
``asyncdal``; ``-p no:asyncdal`` turns it off); an older ``pytest_plugins =
["asyncdal.testing.plugin"]`` line is no longer needed, and harmless. In ``pyproject.toml``
(checked when a test uses the database fixtures; the message says what is missing)::

    [tool.pytest.ini_options]
    asyncio_mode = "auto"
    asyncio_default_fixture_loop_scope = "session"
    asyncio_default_test_loop_scope = "session"

and in ``conftest.py``::

    @pytest.fixture(scope="session")
    def asyncdal_metadata():
        return Base.metadata          # tables created in a throwaway database

    @pytest.fixture
    def asyncdal_app():
        return create_app()           # for asyncdal_client

then a test takes ``asyncdal_client`` (requests to the app), ``rollback_database`` (a
``Database`` for direct access), or both: they share one transaction, rolled back after the
test, so what a request commits is seen by the test and gone for the next one.

Fixtures:
    asyncdal_test_url: the server the databases are created on: ``TEST_DATABASE_URL``, else
        ``postgresql://postgres@127.0.0.1:5432/postgres``. Override it to choose another.
    asyncdal_metadata: override it to return the ``MetaData`` to create (default: none).
    asyncdal_database: a ``Database`` on a throwaway database with those tables, made once per
        session for each ``asyncdal_metadata`` override (a conftest per folder may have its
        own) and dropped at the end.
    rollback_connection: a connection to it, in a transaction rolled back after the test.
    rollback_database: ``asyncdal_database`` with everything a test does rolled back.
    asyncdal_app: override it to return your app.
    asyncdal_client: an ``httpx.AsyncClient`` on ``asyncdal_app`` with its lifespan running
        and every database of the app pinned to a rolled-back transaction (``main`` to
        ``rollback_connection``).
    asyncdal_database_names: override it to name all your app's databases (default
        ``("main",)``): each one's ``DB__<NAME>__URL`` names the test database meanwhile.
    asyncdal_override: ``override(target, fake=None, database="main")`` on ``asyncdal_app``
        (see :func:`asyncdal.testing.override`): fakes for the providers of a repository
        class, committed by the middleware like real units of work; undone after the test.
    asyncdal_replica_pair: a real primary and streaming replica for the session (see
        :func:`asyncdal.testing.replica_pair`).

The fakes and harnesses in :mod:`asyncdal.testing` need no pytest; only this module does.
"""

import sys

import pytest

from asyncdal.testing._client import (
    asyncdal_app,
    asyncdal_client,
    asyncdal_database_names,
    asyncdal_override,
)
from asyncdal.testing._fixtures import (
    _asyncdal_throwaway_databases,  # noqa: F401  (a fixture: pytest finds it by name)
    asyncdal_database,
    asyncdal_metadata,
    asyncdal_replica_pair,
    asyncdal_test_url,
    rollback_connection,
    rollback_database,
)

__all__ = [
    "asyncdal_app",
    "asyncdal_client",
    "asyncdal_database",
    "asyncdal_database_names",
    "asyncdal_metadata",
    "asyncdal_override",
    "asyncdal_replica_pair",
    "asyncdal_test_url",
    "pytest_collection_modifyitems",
    "pytest_plugin_registered",
    "rollback_connection",
    "rollback_database",
]

# Fixtures that hold one connection of the session's event loop: a test using them, and any
# async fixture of its own in between, must run in that loop.
_SESSION_LOOP_FIXTURES = frozenset({"rollback_connection", "rollback_database", "asyncdal_client"})

_LOOP_SCOPES = """\
{test} uses {fixtures}, which keep one connection in the session's event loop: the test and
your async fixtures must run in that loop too. Add to pyproject.toml (or the [pytest] section
of pytest.ini):

    [tool.pytest.ini_options]
    asyncio_mode = "auto"
    asyncio_default_fixture_loop_scope = "session"
    asyncio_default_test_loop_scope = "session"

Now: asyncio_default_fixture_loop_scope = {fixture_scope!r}, this test's loop scope = \
{test_scope!r}."""


_ENTRY_POINT = "asyncdal"


def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    """Once this module is registered under one of its names, the other one loads nothing.

    Registered by the entry point (``asyncdal``), a ``pytest_plugins =
    ["asyncdal.testing.plugin"]`` line becomes a no-op; registered by that line or by ``-p
    asyncdal.testing.plugin`` (which comes before entry points), the entry point is skipped.
    Either way instead of pytest's "Plugin already registered under a different name".
    """
    this = sys.modules[__name__]
    if plugin is this:
        name = manager.get_name(this)
        manager.set_blocked(_ENTRY_POINT if name == __name__ else __name__)


def _test_loop_scope(item: pytest.Item) -> object:
    marker = item.get_closest_marker("asyncio")
    marked = marker.kwargs.get("loop_scope") if marker is not None else None
    return marked or item.config.getini("asyncio_default_test_loop_scope") or "function"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run, saying what to write, when a test that uses the database fixtures would
    run outside the session's event loop (the pytest-asyncio settings are missing)."""
    try:
        fixture_scope = config.getini("asyncio_default_fixture_loop_scope") or None
    except ValueError:  # pytest-asyncio is not loaded: nothing runs these tests anyway
        return
    for item in items:
        used = _SESSION_LOOP_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if not used:
            continue
        test_scope = _test_loop_scope(item)
        if fixture_scope != "session" or test_scope != "session":
            raise pytest.UsageError(
                _LOOP_SCOPES.format(
                    test=item.nodeid,
                    fixtures=", ".join(sorted(used)),
                    fixture_scope=fixture_scope,
                    test_scope=test_scope,
                )
            )
