"""Real servers for tests: a throwaway PostgreSQL cluster, a primary with a streaming replica,
and databases created and dropped on a server (PgBouncer: :mod:`asyncdal.testing._pgbouncer`).
No pytest needed: they are context managers and coroutines, usable from a benchmark or a
script as well as from fixtures.

Example:
    >>> with replica_pair() as pair:                   # initdb + pg_basebackup, spare ports
    ...     await pair.pause_replay()                  # the replica falls behind on purpose
    >>> url = await create_test_database(DEFAULT_TEST_DATABASE_URL, prefix="orders")
    >>> await drop_test_database(url)
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import URL, make_url

__all__ = [
    "DEFAULT_TEST_DATABASE_URL",
    "ReplicaPair",
    "ThrowawayCluster",
    "create_test_database",
    "drop_test_database",
    "replica_pair",
    "spare_port",
    "throwaway_cluster",
]

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The server the fixtures use when ``TEST_DATABASE_URL`` is not set."""


def spare_port() -> int:
    """A local TCP port nothing listens on right now (bound by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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

    def stop(self, mode: str = "fast") -> None:
        """Stop the server and wait for it.

        Args:
            mode: ``fast`` (sessions are ended, a checkpoint is written), ``immediate`` (every
                process killed at once, as in a crash: the next start recovers from the WAL),
                or ``smart`` (waits for the sessions to end).
        """
        self._run("pg_ctl", "-D", str(self._data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop (in ``mode``, see :meth:`stop`) and start again."""
        self.stop(mode)
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
def throwaway_cluster(
    os_user: str = "postgres", *, settings: Mapping[str, str] | None = None
) -> Iterator[ThrowawayCluster]:
    """Create, start and finally remove a PostgreSQL cluster on a spare port.

    It runs as ``os_user`` when this process is root (PostgreSQL refuses root). The server
    binaries are Debian's (``/usr/lib/postgresql/<version>/bin``).

    Args:
        os_user: the account the server runs as when this process is root.
        settings: server settings for its ``postgresql.conf``, e.g. ``{"max_connections":
            "20"}`` (kept across restarts).

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
        if settings:
            with (data / "postgresql.conf").open("a") as conf:
                for name, value in settings.items():
                    conf.write(f"{name} = '{value}'\n")
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
