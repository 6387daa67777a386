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

from __future__ import annotations

import asyncio
import builtins
import itertools
import operator
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal.errors import InvalidQueryError, ReadOnlyError, UnitOfWorkError
from asyncdal.orm._database import Database
from asyncdal.orm._repository import Repository, check_allowed, check_page
from asyncdal.orm._uow import UnitOfWork
from asyncdal.settings import DatabaseSettings
from asyncdal.testing._faultproxy import FaultProxy

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

ModelT = TypeVar("ModelT")
R = TypeVar("R")

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The server the fixtures use when ``TEST_DATABASE_URL`` is not set."""

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "in": lambda value, choices: value in choices,
}


class InMemoryRepository(Generic[ModelT]):
    """A dict-backed stand-in for :class:`~asyncdal.repository.Repository`, same rules.

    Args:
        model: the mapped class it stores.
        sortable, filterable, max_page_size, default_page_size: as on ``Repository``.
    """

    def __init__(
        self,
        model: type[ModelT],
        *,
        sortable: Iterable[str] = (),
        filterable: Iterable[str] = (),
        default_page_size: int = 50,
        max_page_size: int = 100,
    ) -> None:
        self.model = model
        self.sortable = frozenset(sortable)
        self.filterable = frozenset(filterable)
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        (self._key,) = (column.key for column in inspect(model).primary_key)
        self._columns = set(inspect(model).columns.keys())
        self._rows: dict[Any, ModelT] = {}
        self._ids = itertools.count(1)

    @classmethod
    def like(cls, repository: type[Repository[ModelT]]) -> InMemoryRepository[ModelT]:
        """An in-memory repository with the model and whitelists of ``repository``."""
        return cls(
            repository.model,
            sortable=repository.sortable,
            filterable=repository.filterable,
            default_page_size=repository.default_page_size,
            max_page_size=repository.max_page_size,
        )

    async def get(self, ident: Any) -> ModelT | None:
        return self._rows.get(ident)

    async def get_many(self, idents: Iterable[Any]) -> list[ModelT]:
        return [self._rows[ident] for ident in idents if ident in self._rows]

    async def list(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[ModelT]:
        page = check_page(limit, offset, default=self.default_page_size, maximum=self.max_page_size)
        rows: builtins.list[ModelT] = sorted(
            self._matching(filters), key=lambda row: getattr(row, self._key)
        )
        fields = [order_by] if isinstance(order_by, str) else list(order_by or ())
        for field in reversed(fields):
            name = field.removeprefix("-")
            self._check(name, self.sortable, "sort")
            rows.sort(key=lambda row: getattr(row, name), reverse=field.startswith("-"))
        return rows[offset : offset + page]

    async def count(self, *, filters: Mapping[str, Any] | None = None) -> int:
        return len(self._matching(filters))

    async def add(self, obj: ModelT) -> ModelT:
        if getattr(obj, self._key, None) is None:
            setattr(obj, self._key, next(self._ids))
        self._rows[getattr(obj, self._key)] = obj
        return obj

    async def add_many(self, objs: Iterable[ModelT]) -> builtins.list[ModelT]:
        return [await self.add(obj) for obj in objs]

    async def update(self, obj_or_ident: Any, /, **values: Any) -> ModelT | None:
        unknown = set(values) - self._columns
        if unknown:
            raise InvalidQueryError(f"unknown columns: {sorted(unknown)}")
        obj = self._resolve(obj_or_ident)
        if obj is not None:
            for name, value in values.items():
                setattr(obj, name, value)
        return obj

    async def delete(self, obj_or_ident: Any, /) -> bool:
        obj = self._resolve(obj_or_ident)
        if obj is None:
            return False
        del self._rows[getattr(obj, self._key)]
        return True

    def _resolve(self, obj_or_ident: Any) -> ModelT | None:
        if isinstance(obj_or_ident, self.model):
            return obj_or_ident
        return self._rows.get(obj_or_ident)

    def _check(self, name: str, allowed: frozenset[str], purpose: str) -> None:
        check_allowed(name, allowed, purpose)

    def _matching(self, filters: Mapping[str, Any] | None) -> builtins.list[ModelT]:
        tests: builtins.list[tuple[str, Callable[[Any, Any], bool], Any]] = []
        for key, expected in (filters or {}).items():
            name, _, op = key.partition("__")
            compare = _COMPARE.get(op or "eq")
            if compare is None:
                raise InvalidQueryError(f"unknown filter operator {op!r}")
            self._check(name, self.filterable, "filter")
            tests.append((name, compare, expected))
        return [
            row
            for row in self._rows.values()
            if all(compare(getattr(row, name), expected) for name, compare, expected in tests)
        ]


def _no_session() -> AsyncSession:
    raise UnitOfWorkError("a FakeUnitOfWork has no session; use its repositories")


class FakeOutbox:
    """The outbox of a :class:`FakeUnitOfWork` (``Outbox.of(uow)``): keeps the events added.

    Attributes:
        events: ``(event_type, payload, key)`` of each ``add``, keys as strings like the real
            outbox stores them.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], str | None]] = []

    async def add(
        self, event_type: str, payload: Mapping[str, Any], *, key: str | int | None = None
    ) -> int:
        """Record the event; returns its position (1, 2, ...) as its id."""
        if not event_type:
            raise ValueError("event_type must not be empty")
        self.events.append((event_type, dict(payload), None if key is None else str(key)))
        return len(self.events)


class FakeUnitOfWork(UnitOfWork):
    """A unit of work for unit tests: records commits and rollbacks, hands out fakes.

    It is a :class:`~asyncdal.uow.UnitOfWork`, so code typed against ``UnitOfWork`` accepts
    it; it has no session, and ``repository(cls)`` returns the fake registered for ``cls``.

    Args:
        repositories: the fake to return for each repository class.
        read_only: behave like a read-only unit of work (``commit()`` raises).
    """

    def __init__(
        self, repositories: Mapping[Any, Any] | None = None, *, read_only: bool = False
    ) -> None:
        super().__init__(None, _no_session, read_only=read_only)
        self.repositories = dict(repositories or {})
        self.committed = False
        self.commits = 0
        self.rollbacks = 0
        self.fake_outbox = FakeOutbox()

    @property
    def outbox_stand_in(self) -> FakeOutbox:
        """What ``asyncdal.outbox.Outbox.of(uow)`` returns: a :class:`FakeOutbox`, whose
        ``events`` list what was added."""
        if self.read_only:
            raise ReadOnlyError("a read-only unit of work cannot add outbox events")
        return self.fake_outbox

    def repository(self, repository_class: Callable[..., R]) -> R:
        """The fake registered for ``repository_class``."""
        try:
            return cast("R", self.repositories[repository_class])
        except KeyError:
            raise KeyError(f"no fake registered for {repository_class!r}") from None

    async def commit(self) -> None:
        if self.read_only:
            raise ReadOnlyError("a read-only unit of work cannot commit")
        self.commits += 1
        self.committed = True

    async def rollback(self) -> None:
        self.rollbacks += 1

    @property
    def session(self) -> AsyncSession:
        """Always raises: a fake unit of work has no session."""
        return _no_session()

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._open = False
        if exc_type is not None or not self.committed:
            self.rollbacks += 1


def spare_port() -> int:
    """A local TCP port nothing listens on right now (bound by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def run_pgbouncer(
    server_url: str, *, pool_size: int = 5, os_user: str = "postgres"
) -> Iterator[int]:
    """Run a PgBouncer in ``pool_mode = transaction`` in front of ``server_url``; yield its port.

    It listens on a spare 127.0.0.1 port, trusts every user listed (the URL's), runs as
    ``os_user`` (it refuses to run as root), and is stopped and cleaned up on exit.

    Args:
        server_url: the PostgreSQL server behind it (trust or no authentication).
        pool_size: PgBouncer's ``default_pool_size``: server connections per user and database.
        os_user: the account to run it as when this process is root.

    Raises:
        RuntimeError: pgbouncer is not installed, or did not start within 10 s.
    """
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
    server = make_url(server_url)
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    port = spare_port()
    (folder / "userlist.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder}/userlist.txt\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 1000\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {folder}/pgbouncer.log\npidfile = {folder}/pgbouncer.pid\n"
    )
    account = pwd.getpwnam(os_user) if os.geteuid() == 0 else None
    if account is not None:
        for path in (folder, *folder.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
    process = subprocess.Popen(  # noqa: S603 - our own binary and config file, no shell
        [binary, str(folder / "pgbouncer.ini")],
        user=account.pw_uid if account else None,
        group=account.pw_gid if account else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                log = folder / "pgbouncer.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"pgbouncer exited with {process.returncode}: {tail}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("pgbouncer did not start listening within 10 s")
            time.sleep(0.05)  # poll interval; the deadline bounds the wait
        yield port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


class ThrowawayCluster:
    """A PostgreSQL cluster of the test's own, to stop and start at will (see
    :func:`throwaway_cluster`).

    Attributes:
        url: ``postgresql://postgres@127.0.0.1:<port>/postgres`` (trust authentication).
    """

    def __init__(self, bindir: Path, data: Path, port: int, account: pwd.struct_passwd | None):
        self._bindir = bindir
        self._data = data
        self._account = account
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, program: str, *arguments: str) -> None:
        subprocess.run(  # noqa: S603 - the server's own binaries, no shell
            [str(self._bindir / program), *arguments],
            check=True,
            capture_output=True,
            user=self._account.pw_uid if self._account else None,
            group=self._account.pw_gid if self._account else None,
        )

    def _psql(self, query: str) -> str:
        result = subprocess.run(  # noqa: S603 - the server's own client, no shell
            [
                *(str(self._bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port)),
                *("-U", "postgres", "-d", "postgres", "-Atc", query),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self._data} -c listen_addresses=127.0.0.1"
        log = str(self._data / "server.log")
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended) and wait for it."""
        self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Stop and start again."""
        self.stop()
        self.start()


def _server_binaries() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    return candidates[-1].parent


def _owned_folder(prefix: str, account: pwd.struct_passwd | None, *subfolders: str) -> Path:
    """A new temporary folder (and subfolders) owned by ``account``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    paths = [folder]
    for name in subfolders:
        (folder / name).mkdir(mode=0o700)
        paths.append(folder / name)
    if account is not None:
        for path in paths:
            os.chown(path, account.pw_uid, account.pw_gid)
    return folder


def _stop_quietly(cluster: ThrowawayCluster) -> None:
    with suppress(subprocess.CalledProcessError):
        cluster._run("pg_ctl", "-D", str(cluster._data), "-m", "immediate", "-w", "stop")


@contextmanager
def throwaway_cluster(os_user: str = "postgres") -> Iterator[ThrowawayCluster]:
    """Create, start and finally remove a PostgreSQL cluster on a spare port.

    It runs as ``os_user`` when this process is root (PostgreSQL refuses root). The server
    binaries are Debian's (``/usr/lib/postgresql/<version>/bin``).

    Raises:
        RuntimeError: no PostgreSQL server binaries are installed.
    """
    bindir = _server_binaries()
    account = pwd.getpwnam(os_user) if os.geteuid() == 0 else None
    folder = _owned_folder("pgcluster-", account, "data")
    data = folder / "data"
    cluster = ThrowawayCluster(bindir, data, spare_port(), account)
    try:
        cluster._run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        cluster.start()
        yield cluster
    finally:
        _stop_quietly(cluster)
        shutil.rmtree(folder, ignore_errors=True)


class ReplicaPair:
    """A primary and a streaming replica of it (see :func:`replica_pair`).

    Attributes:
        primary: the primary cluster (``primary.url``).
        replica: the hot standby (``replica.url``), streaming from the primary.
    """

    def __init__(self, primary: ThrowawayCluster, replica: ThrowawayCluster) -> None:
        self.primary = primary
        self.replica = replica

    async def _on_replica(self, query: str, *arguments: Any) -> Any:
        connection = await asyncpg.connect(self.replica.url)
        try:
            return await connection.fetchval(query, *arguments)
        finally:
            await connection.close()

    async def pause_replay(self) -> None:
        """Pause WAL replay on the replica (``pg_wal_replay_pause()``) and wait until it is."""
        await self._on_replica("SELECT pg_wal_replay_pause()")
        await self._until("SELECT pg_get_wal_replay_pause_state() = 'paused'")

    async def resume_replay(self) -> None:
        """Resume WAL replay on the replica."""
        await self._on_replica("SELECT pg_wal_replay_resume()")

    async def wait_for_replay(self, lsn: str, within: float = 10.0) -> None:
        """Wait until the replica has replayed the primary's position ``lsn``."""
        await self._until("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", lsn, within=within)

    async def caught_up(self, within: float = 10.0) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        connection = await asyncpg.connect(self.primary.url)
        try:
            position = await connection.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        finally:
            await connection.close()
        await self.wait_for_replay(str(position), within=within)

    async def _until(self, query: str, *arguments: Any, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while not await self._on_replica(query, *arguments):
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica: not true within {within:g}s: {query}")
            await asyncio.sleep(0.02)


@contextmanager
def replica_pair(os_user: str = "postgres") -> Iterator[ReplicaPair]:
    """A real primary and a streaming hot-standby replica, on spare ports in a temporary folder.

    The primary is made by ``initdb``, the replica by ``pg_basebackup -R`` from it; both run as
    ``os_user`` when this process is root. Both are stopped and the folder removed on the way
    out, also when the block fails.

    Raises:
        RuntimeError: no PostgreSQL server binaries are installed.
        subprocess.CalledProcessError: a server tool failed (its output is in the error).
    """
    bindir = _server_binaries()
    account = pwd.getpwnam(os_user) if os.geteuid() == 0 else None
    folder = _owned_folder("pgpair-", account, "primary", "replica")
    primary = ThrowawayCluster(bindir, folder / "primary", spare_port(), account)
    replica = ThrowawayCluster(bindir, folder / "replica", spare_port(), account)
    try:
        primary._run(
            "initdb", "-D", str(folder / "primary"), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        primary.start()
        primary._run(
            "pg_basebackup",
            "-h", "127.0.0.1",
            "-p", str(primary.port),
            "-U", "postgres",
            "-D", str(folder / "replica"),
            "-R",
            "-X", "stream",
            "--no-sync",
        )  # fmt: skip
        replica.start()
        pair = ReplicaPair(primary, replica)
        _wait_for_streaming(primary)
        yield pair
    finally:
        _stop_quietly(replica)
        _stop_quietly(primary)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_streaming(primary: ThrowawayCluster, timeout: float = 30.0) -> None:
    # psql, not asyncpg: the caller may be inside a running event loop.
    query = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
    deadline = time.monotonic() + timeout
    while primary._psql(query) == "0":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the replica did not start streaming within {timeout:g}s")
        time.sleep(0.05)  # poll interval; the deadline bounds the wait


def _server_dsn(url: URL) -> str:
    """A plain libpq-style DSN that asyncpg accepts (the password stays inside)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def create_test_database(server_url: str, *, prefix: str = "asyncdal_test") -> URL:
    """Create a fresh, uniquely named database on the server and return its URL."""
    url = make_url(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(_server_dsn(url))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.set(database=name)


async def drop_test_database(url: URL) -> None:
    """Drop a database made by :func:`create_test_database`, ending its sessions first."""
    maintenance = url.set(database="postgres")
    connection = await asyncpg.connect(_server_dsn(maintenance))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def asyncdal_test_url() -> str:
    """The server tests create their databases on (``TEST_DATABASE_URL``)."""
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


@pytest.fixture(scope="session")
def asyncdal_replica_pair() -> Iterator[ReplicaPair]:
    """A primary and a streaming replica for the whole test session (see :func:`replica_pair`)."""
    with replica_pair() as pair:
        yield pair


@pytest.fixture(scope="session")
def asyncdal_metadata() -> MetaData | None:
    """Override to return the ``MetaData`` whose tables the test database should have."""
    return None


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asyncdal_database(
    asyncdal_test_url: str, asyncdal_metadata: MetaData | None
) -> AsyncIterator[Database]:
    """A :class:`Database` on a throwaway database, with the metadata's tables, dropped after."""
    url = await create_test_database(asyncdal_test_url)
    database = Database(
        "main",
        DatabaseSettings(url=url.render_as_string(hide_password=False), pool="queue"),
    )
    try:
        if asyncdal_metadata is not None:
            async with database.engine.begin() as connection:
                await connection.run_sync(asyncdal_metadata.create_all)
        yield database
    finally:
        await database.dispose()
        await drop_test_database(url)


@pytest_asyncio.fixture(loop_scope="session")
async def rollback_database(asyncdal_database: Database) -> AsyncIterator[Database]:
    """``asyncdal_database`` with every session inside one transaction rolled back afterwards.

    All its sessions share one connection: run the test in the session's event loop
    (``@pytest.mark.asyncio(loop_scope="session")``, or ``asyncio_default_test_loop_scope =
    "session"``), and don't use it from concurrent tasks.
    """
    async with asyncdal_database.engine.connect() as connection:
        transaction = await connection.begin()
        try:
            async with asyncdal_database.use_connection(connection):
                yield asyncdal_database
        finally:
            await transaction.rollback()
