"""``make run`` with no database configured: the embedded PostgreSQL, migrated, seeded, served.

The dev server runs as ``make run`` runs it (``python -m catalog.devserver``), in a process of
its own, with no ``DATABASE_URL`` / ``DB__*`` and its data in a temporary folder
(``CATALOG_DATA_DIR``). A seeded product must come back over HTTP, and after SIGTERM the server
must exit by itself and stop the PostgreSQL it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from catalog.seed import DEMO_CATEGORIES, DEMO_PRODUCTS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE = 60.0  # initdb, migrations and seeding: a few seconds, much more when slow
EXIT_DEADLINE = 30.0


def make_run_command() -> list[str]:
    """``make run``'s recipe, read from the Makefile, with this interpreter as ``$(BIN)/python``.

    Running make itself would first run ``make install``, which may reinstall the virtualenv.
    """
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n\t(.+)$", makefile, flags=re.MULTILINE)
    assert recipe is not None, "no run target in the Makefile"
    words = recipe.group(1).split()
    assert words[0] == "$(BIN)/python", recipe.group(1)
    return [sys.executable, *words[1:]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def devserver_environment(data_dir: Path, port: int) -> dict[str, str]:
    """This environment without any database settings, with the server's folder and port."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if name.upper() not in {"DATABASE_URL", "TEST_DATABASE_URL", "AWS_LAMBDA_FUNCTION_NAME"}
        and not name.upper().startswith("DB__")
    }
    environ.update(
        CATALOG_DATA_DIR=str(data_dir),
        HOST="127.0.0.1",
        PORT=str(port),
        PYTHONUNBUFFERED="1",
        LOG_FORMAT="json",
    )
    return environ


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """The server processes of the cluster in ``pgdata`` (each runs with it as its cwd)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline", "cwd"]):
        if process.info["name"] != "postgres":
            continue
        cmdline = process.info["cmdline"] or []
        if process.info["cwd"] == str(pgdata) or any(str(pgdata) in part for part in cmdline):
            found.append(process)
    return found


def stop_postgres(pgdata: Path) -> None:
    """Stop what the dev server may have left behind (only after a failure)."""
    processes = postgres_processes(pgdata)
    for process in processes:
        if str(pgdata) in " ".join(process.info["cmdline"] or []):  # the postmaster
            process.send_signal(signal.SIGINT)  # fast shutdown
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=10)


class DevServer:
    """``python -m catalog.devserver`` in its own session, its output in a file."""

    def __init__(
        self, data_dir: Path, port: int, cwd: Path, environ: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "postgres"
        self.url = f"http://127.0.0.1:{port}"
        self.log = cwd / "devserver.log"
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                make_run_command(),
                cwd=cwd,
                env={**devserver_environment(data_dir, port), **(environ or {})},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_answering(self, path: str) -> httpx.Response:
        """Poll ``path`` until the server answers; fail if it exits or the deadline passes."""
        deadline = time.monotonic() + STARTUP_DEADLINE
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while True:
                if self.process.poll() is not None:
                    pytest.fail(
                        f"the dev server exited ({self.process.returncode}) before answering:\n"
                        + self.output()
                    )
                try:
                    return http.get(path)
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        pytest.fail(
                            f"the dev server did not answer within {STARTUP_DEADLINE:.0f} s:\n"
                            + self.output()
                        )
                    time.sleep(0.2)

    def terminate(self) -> int | None:
        """SIGTERM, as a process manager stops it; the exit code, or None if it had to be killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=EXIT_DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return None


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temporary folder: the dev server's cwd (so no ``.env`` of the repository applies)."""
    path = Path(tempfile.mkdtemp(prefix="catalog-devserver-"))
    # Running as root, pgserver runs PostgreSQL as its own "pgserver" user, which must be able
    # to reach the data folder; mkdtemp makes it 0700. (pgserver widens the parents itself as
    # well, but the test does not rely on it.)
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def devserver(workdir: Path) -> Iterator[DevServer]:
    data_dir = workdir / "data"
    server = DevServer(data_dir, free_port(), cwd=workdir)
    try:
        yield server
    finally:
        # After a failure: no dev server and no PostgreSQL may outlive the test.
        server.terminate()
        stop_postgres(server.pgdata)


def test_make_run_serves_seeded_products_from_embedded_postgres(devserver: DevServer) -> None:
    response = devserver.wait_until_answering("/products/1")

    assert response.status_code == 200, response.text
    body = response.json()
    sku, name, price = DEMO_PRODUCTS[0]
    assert (body["id"], body["sku"], body["name"]) == (1, sku, name)
    assert Decimal(body["price"]) == price
    listing = httpx.get(f"{devserver.url}/products", timeout=5).json()
    assert [item["sku"] for item in listing["items"]] == [sku for sku, _, _ in DEMO_PRODUCTS]
    # The reference database (a second database on the embedded server) is migrated and seeded.
    categories = httpx.get(f"{devserver.url}/categories", timeout=5)
    assert categories.status_code == 200, categories.text
    assert [category["name"] for category in categories.json()] == list(DEMO_CATEGORIES)
    assert (devserver.pgdata / "PG_VERSION").exists(), "the data is not in CATALOG_DATA_DIR"
    traced = httpx.get(f"{devserver.url}/products/2", headers={"X-Request-ID": "e2e-77"})
    assert traced.headers["x-request-id"] == "e2e-77"
    postmasters = [
        process
        for process in postgres_processes(devserver.pgdata)
        if str(devserver.pgdata) in " ".join(process.info["cmdline"] or [])
    ]
    assert len(postmasters) == 1, "the embedded PostgreSQL is not running from CATALOG_DATA_DIR"

    code = devserver.terminate()

    assert code is not None, "the dev server ignored SIGTERM:\n" + devserver.output()
    # Killed by the signal (a negative code), it would have skipped its exit handlers.
    assert code in (0, 128 + signal.SIGTERM), f"exit code {code}:\n" + devserver.output()
    left = postgres_processes(devserver.pgdata)
    assert not left, (
        f"PostgreSQL still running after the dev server exited ({code}): "
        f"{[process.info for process in left]}\n{devserver.output()}"
    )
    assert not (devserver.pgdata / "postmaster.pid").exists(), "PostgreSQL was not shut down"
    # LOG_FORMAT=json: the server's records are JSON lines, the access log line of the traced
    # request carries its request id.
    records = [json.loads(line) for line in devserver.output().splitlines() if line[:1] == "{"]
    assert any(r["logger"] == "catalog.devserver" for r in records), devserver.output()
    traced_lines = [r for r in records if r.get("request_id") == "e2e-77"]
    assert traced_lines, devserver.output()
    assert "/products/2" in traced_lines[0]["message"]


async def test_make_run_with_only_database_url_uses_it_for_the_reference_database_too(
    workdir: Path, server_url: str
) -> None:
    # The getting-started page's way to use one's own server: DATABASE_URL and nothing else.
    from asyncdal.testing import create_test_database, drop_test_database

    url = await create_test_database(server_url, prefix="catalog_only_url")
    server = DevServer(
        workdir / "data",
        free_port(),
        cwd=workdir,
        environ={"DATABASE_URL": url.render_as_string(hide_password=False)},
    )
    try:
        ready = await asyncio.to_thread(server.wait_until_answering, "/health/ready")
        assert ready.status_code == 200, ready.text + server.output()
        categories = httpx.get(f"{server.url}/categories", timeout=5)
        assert categories.status_code == 200, categories.text
        assert categories.json() == []  # migrated, not seeded: not the embedded server
        created = httpx.post(
            f"{server.url}/products", json={"sku": "ONLY-URL", "name": "n", "price": "1.00"}
        )
        assert created.status_code == 201, created.text
        assert not (workdir / "data" / "postgres").exists(), "an embedded server was started"
    finally:
        server.terminate()
        stop_postgres(server.pgdata)
    connection = await asyncpg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        # Both histories in the one database, each with its own version table.
        tables = {
            row["tablename"] for row in await connection.fetch("SELECT tablename FROM pg_tables")
        }
        assert {"products", "categories", "alembic_version", "alembic_version_reference"} <= tables
    finally:
        await connection.close()
        await drop_test_database(url)
    records = [json.loads(line) for line in server.output().splitlines() if line[:1] == "{"]
    assert [r for r in records if "the reference database is the main database" in r["message"]], (
        server.output()
    )
