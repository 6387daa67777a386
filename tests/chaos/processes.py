"""The stack a chaos scenario runs: a throwaway PostgreSQL cluster (maybe behind a PgBouncer),
the catalog in a real uvicorn process, and the outbox worker in a real process.

Every process writes its output to a file of the test's own, shown when a check fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from alembic import command
from sqlalchemy.engine import make_url

from asyncdal.testing import PgBouncer, ThrowawayCluster, pgbouncer, spare_port, throwaway_cluster
from tests.conftest import alembic_config, database_settings, reference_alembic_config

__all__ = [
    "SERVICE_APP",
    "SERVICE_POOL",
    "SERVICE_POOL_TIMEOUT",
    "WORKER_APP",
    "ManagedProcess",
    "Stack",
    "chaos_stack",
]

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "catalog"
SERVICE_APP = "chaos-catalog"
WORKER_APP = "chaos-worker"
SERVICE_POOL = 6
"""The service's pool: its size, no overflow."""
SERVICE_POOL_TIMEOUT = 2.0
"""Seconds a request of the service waits for a pooled connection before its 503."""
HANDLER_POOL = 4
STARTUP_SECONDS = 60.0
STOP_SECONDS = 20.0

# The handlers' effects, without a primary key: an effect applied twice shows as two rows.
CHAOS_TABLES = """
CREATE TABLE chaos_effects (event_id bigint NOT NULL, applied_at timestamptz DEFAULT now());
CREATE TABLE chaos_repeats (event_id bigint NOT NULL, seen_at timestamptz DEFAULT now());
"""

# Fast and gentle on a shared machine; fsync and full-page writes only matter when the machine
# itself crashes, which no scenario does (an immediate shutdown kills the server, not the page
# cache). synchronous_commit stays on: off, a commit is answered before its WAL leaves the
# server's shared memory, and an immediate shutdown (scenario 2) would lose transactions the
# service had answered 201 for, which is the server keeping no promise, not the service.
CLUSTER_SETTINGS = {"fsync": "off", "full_page_writes": "off"}


def _clean_environment() -> dict[str, str]:
    """This environment without any database, outbox or test settings."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(("DB__", "OUTBOX__", "CHAOS_"))
        and name.upper() not in {"DATABASE_URL", "TEST_DATABASE_URL", "PYTEST_CURRENT_TEST"}
    }


class ManagedProcess:
    """A process of the stack, started again at will, its output in ``log``."""

    def __init__(self, name: str, argv: list[str], environment: dict[str, str], log: Path):
        self.name = name
        self.argv = argv
        self.environment = environment
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.log.parent,  # no stray .env from the repository
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """``kill -9``: no shutdown at all."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_SECONDS)
        self.kills += 1

    def freeze(self) -> None:
        """SIGSTOP: the process runs no more until :meth:`thaw` (its sockets stay open)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def stop(self) -> int:
        """SIGTERM, and its exit status (killed after 20 s)."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(process.wait, STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
            raise

    def output(self, tail: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else ""


@dataclass
class Stack:
    """What a scenario runs against.

    Attributes:
        cluster: the PostgreSQL cluster of the scenario.
        direct_url: the catalog database, straight to the server (for checks and faults).
        app_url: the catalog database as the service and the worker reach it.
        service: the catalog in uvicorn.
        worker: the outbox worker (``asyncdal outbox run``).
        base_url: the service's HTTP address.
        worker_metrics: the worker's Prometheus address.
        bouncer: the PgBouncer in between, if any.
    """

    cluster: ThrowawayCluster
    direct_url: str
    app_url: str
    service: ManagedProcess
    worker: ManagedProcess
    base_url: str
    worker_metrics: str
    bouncer: PgBouncer | None = None
    notes: list[str] = field(default_factory=list)

    async def connect(self) -> asyncpg.Connection:
        """A plain connection to the catalog database (for checks and faults)."""
        return await asyncpg.connect(self.direct_url)

    async def service_ready(self, timeout: float = STARTUP_SECONDS) -> None:
        """Wait until the service answers (failing if it exits)."""
        await _answering(self.service, f"{self.base_url}/health/live", timeout)

    async def worker_ready(self, timeout: float = STARTUP_SECONDS) -> None:
        """Wait until the worker serves its metrics (it started) (failing if it exits)."""
        await _answering(self.worker, f"{self.worker_metrics}/metrics", timeout)

    def logs(self) -> str:
        parts = [f"--- {p.name} ---\n{p.output()}" for p in (self.service, self.worker)]
        if self.bouncer is not None:
            parts.append(f"--- pgbouncer ---\n{self.bouncer.log()[-3000:]}")
        return "\n".join(parts)


async def _answering(process: ManagedProcess, url: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            if not process.alive:
                raise AssertionError(f"{process.name} exited:\n{process.output()}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == 200:
                    return
            if loop.time() > deadline:
                raise AssertionError(f"{process.name} not answering:\n{process.output()}")
            await asyncio.sleep(0.1)


async def _prepare_database(server_url: str) -> str:
    """Create the catalog database, migrate both histories into it, add the chaos tables."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await admin.close()
    url = make_url(server_url).set(database=DATABASE)
    main = database_settings(url)
    await asyncio.to_thread(command.upgrade, alembic_config(main), "head")
    both = database_settings(url, reference=url)
    await asyncio.to_thread(command.upgrade, reference_alembic_config(both), "head")
    direct = url.render_as_string(hide_password=False)
    connection = await asyncpg.connect(direct)
    try:
        await connection.execute(CHAOS_TABLES)
    finally:
        await connection.close()
    return direct


def _service(app_url: str, port: int, pooled: bool, log: Path) -> ManagedProcess:
    environment = _clean_environment() | {
        "DATABASE_URL": app_url,
        "DB__MAIN__APPLICATION_NAME": SERVICE_APP,
        "DB__MAIN__POOL_SIZE": str(SERVICE_POOL),
        "DB__MAIN__MAX_OVERFLOW": "0",
        "DB__MAIN__POOL_TIMEOUT": f"{SERVICE_POOL_TIMEOUT:g}",
        "DB__MAIN__CONNECT_TIMEOUT": "3",
        "DB__MAIN__COMMAND_TIMEOUT": "10",
        "DB__MAIN__PGBOUNCER": "true" if pooled else "false",
        "OUTBOX__PROCESSES": "1",
        "OUTBOX__HANDLER_POOL_SIZE": str(HANDLER_POOL),
        "PYTHONPATH": str(ROOT),
    }
    argv = [
        sys.executable,
        *("-m", "uvicorn", "catalog.app:create_app", "--factory"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--log-level", "warning", "--no-access-log"),
    ]
    return ManagedProcess("service", argv, environment, log)


def _worker(
    app_url: str, metrics_port: int, pooled: bool, log: Path, extra: Mapping[str, str]
) -> ManagedProcess:
    outbox = {
        "POLL_INTERVAL": "0.5",
        "LEASE_SECONDS": "5",
        "BACKOFF_INITIAL": "0.05",
        "BACKOFF_MAX": "1",
        "MAINTENANCE_SECONDS": "1",
        "LISTEN_CHECK_SECONDS": "5",
        "CONCURRENCY": "16",
        "BATCH_SIZE": "100",
        "HANDLER_POOL_SIZE": str(HANDLER_POOL),
        "SHUTDOWN_TIMEOUT": "5",
        "METRICS_PORT": str(metrics_port),
    }
    environment = _clean_environment() | {
        "DATABASE_URL": app_url,
        "DB__MAIN__APPLICATION_NAME": WORKER_APP,
        "DB__MAIN__CONNECT_TIMEOUT": "3",
        "DB__MAIN__COMMAND_TIMEOUT": "10",
        "DB__MAIN__PGBOUNCER": "true" if pooled else "false",
        "PYTHONPATH": str(ROOT),
        **{f"OUTBOX__{name}": value for name, value in outbox.items()},
        **extra,
    }
    argv = [
        sys.executable,
        *("-m", "asyncdal", "outbox", "run", "--handlers", "tests.chaos.handlers:build"),
        *("--log-level", "INFO"),
    ]
    return ManagedProcess("worker", argv, environment, log)


@contextlib.asynccontextmanager
async def chaos_stack(
    folder: Path,
    *,
    through_pgbouncer: bool = False,
    cluster_settings: Mapping[str, str] | None = None,
    worker_environment: Mapping[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """Start a cluster (and a PgBouncer), migrate, start the service and the worker; stop
    everything at the end, also when the scenario fails."""
    settings = {**CLUSTER_SETTINGS, **(cluster_settings or {})}
    with contextlib.ExitStack() as servers:
        cluster = servers.enter_context(throwaway_cluster(settings=settings))
        direct = await _prepare_database(cluster.url)
        bouncer = None
        app_url = direct
        if through_pgbouncer:
            bouncer = servers.enter_context(pgbouncer(cluster.url, pool_size=12))
            app_url = bouncer.url(DATABASE)
        port, metrics_port = spare_port(), spare_port()
        stack = Stack(
            cluster=cluster,
            direct_url=direct,
            app_url=app_url,
            service=_service(app_url, port, through_pgbouncer, folder / "service.log"),
            worker=_worker(
                app_url,
                metrics_port,
                through_pgbouncer,
                folder / "worker.log",
                worker_environment or {},
            ),
            base_url=f"http://127.0.0.1:{port}",
            worker_metrics=f"http://127.0.0.1:{metrics_port}",
            bouncer=bouncer,
        )
        try:
            stack.service.start()
            stack.worker.start()
            await stack.service_ready()
            await stack.worker_ready()
            yield stack
        finally:
            for process in (stack.service, stack.worker):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await process.stop()
