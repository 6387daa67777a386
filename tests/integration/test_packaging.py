"""What is published: the sdist and the wheel hold what they should, and each install (the core
alone, each extra alone) imports what it promises, in a fresh virtualenv.

One sdist and one wheel are built for the module (``python -m build``: the wheel is built from
the sdist, so the sdist is proven complete too), and every dependency is downloaded once into a
wheelhouse. Each environment is a new virtualenv without pip of its own, filled from that
wheelhouse by this interpreter's pip (``pip --python``, no bytecode compiling), two at a time.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import zipfile
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import MetaData
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseSettings
from asyncdal.outbox import Outbox, outbox_tables
from tests.conftest import plain

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
EXTRAS = set(PROJECT["optional-dependencies"])

# What the core must never load: the integrations' frameworks, and the outbox.
NOT_IN_CORE = (
    "fastapi",
    "starlette",
    "prometheus_client",
    "dependency_injector",
    "aio_pika",
    "asyncdal.outbox",
)

# What each extra is for, as an application writes it.
USES = {
    "fastapi": "import asyncdal.fastapi",
    "container": "import asyncdal.container",
    "metrics": (
        "import asyncdal.metrics\n"
        "from asyncdal.outbox import OutboxMetrics\n"
        "OutboxMetrics().render()"
    ),
    "tracing": (
        "from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor\n"
        "from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor"
    ),
    "testing": "import asyncdal.testing",
    "migrations": "import alembic",
}

# Every extra, in the order their environments are installed (after the core's): the outbox's
# tests come first, so its environment does too.
ORDER = ("outbox", *sorted(USES))

# Python run in an environment: executes the statements given in argv[1], then reports where
# asyncdal came from, which of the modules named in argv[2:] are loaded, and which installed.
PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys
    exec(sys.argv[1])
    import asyncdal
    watched = sys.argv[2:]
    def under(module, name):
        return module == name or module.startswith(name + ".")
    print(json.dumps({
        "asyncdal": asyncdal.__file__,
        "loaded": sorted(n for n in watched if any(under(m, n) for m in list(sys.modules))),
        "installed": sorted(
            n for n in watched if "." not in n and importlib.util.find_spec(n) is not None
        ),
    }))
    """
)


@dataclass(frozen=True)
class Artefacts:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Probe:
    asyncdal: str
    loaded: list[str]
    installed: list[str]


@dataclass(frozen=True)
class Environment:
    """A fresh virtualenv with the wheel installed (and one extra, or none)."""

    root: Path
    workdir: Path
    """An empty directory to run in: no source tree, no ``.env`` on the way."""

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def run(
        self, *arguments: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a program of the environment's ``bin`` (``python``, ``asyncdal``...)."""
        return subprocess.run(
            [str(self.root / "bin" / arguments[0]), *arguments[1:]],
            cwd=self.workdir,
            # Nothing of this process's settings (DB__*, OUTBOX__*...) leaks in.
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def probe(self, statements: str, watched: tuple[str, ...] = NOT_IN_CORE) -> Probe:
        """Run ``statements``, then report on asyncdal and the ``watched`` modules."""
        done = self.run("python", "-c", PROBE, statements, *watched)
        assert done.returncode == 0, done.stderr
        probe = Probe(**json.loads(done.stdout))
        # Guards every check on this environment: the installed wheel is what was imported.
        assert Path(probe.asyncdal).is_relative_to(self.root), probe.asyncdal
        return probe


def _check_call(arguments: list[str], cwd: Path = ROOT) -> None:
    done = subprocess.run(arguments, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(arguments)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Artefacts:
    """The sdist, and the wheel built from it, once for the module."""
    out = tmp_path_factory.mktemp("dist")
    _check_call([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Artefacts(sdist, wheel)


@pytest.fixture(scope="module")
def wheelhouse(artefacts: Artefacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every distribution an environment may need, downloaded once (from pip's cache when it
    can): the environments install from here alone, so pip asks no index for each of them.
    Each still resolves its own requirements, so an extra missing a dependency shows."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    everything = f"asyncdal[{','.join(sorted(EXTRAS))}] @ {artefacts.wheel.as_uri()}"
    _check_call(
        [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(directory), everything]
    )
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _environment(wheel: Path, wheelhouse: Path, directory: Path, extra: str | None) -> Environment:
    root = directory / "venv"
    workdir = directory / "work"
    workdir.mkdir()
    _check_call([sys.executable, "-m", "venv", "--without-pip", str(root)])
    requirement = f"asyncdal[{extra}] @ {wheel.as_uri()}" if extra else str(wheel)
    python = str(root / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-compile"]
    _check_call([*pip, "--no-index", "--find-links", str(wheelhouse), requirement])
    return Environment(root, workdir)


@pytest.fixture(scope="module")
def environments(
    artefacts: Artefacts, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str | None, Future[Environment]]]:
    """A fresh environment for the core (None) and for each extra alone, installed two at a
    time from the first test that needs one: pip waits on the network and the disk much of the
    time, and the first environments are probed while the next ones install. Each test takes
    its own (and its own failure)."""
    directories = {extra: tmp_path_factory.mktemp(extra or "core") for extra in (None, *ORDER)}
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="packaging")
    try:
        yield {
            extra: pool.submit(_environment, artefacts.wheel, wheelhouse, directory, extra)
            for extra, directory in directories.items()
        }
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        # About 50 MB each: not left behind for pytest to keep with its last three runs.
        for directory in directories.values():
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def core(environments: dict[str | None, Future[Environment]]) -> Environment:
    """``pip install asyncdal``: the core dependencies only."""
    return environments[None].result()


@pytest.fixture(scope="module")
def outbox(environments: dict[str | None, Future[Environment]]) -> Environment:
    """``pip install asyncdal[outbox]``: the outbox extra alone."""
    return environments["outbox"].result()


def _zip_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def _source_files() -> set[str]:
    package = ROOT / "src" / "asyncdal"
    return {
        path.relative_to(package.parent).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


# -- the artefacts -----------------------------------------------------------------------------


def test_the_wheel_holds_the_package_and_nothing_else(artefacts: Artefacts) -> None:
    names = _zip_names(artefacts.wheel)
    dist_info = f"asyncdal-{VERSION}.dist-info/"
    assert [name for name in names if not name.startswith(("asyncdal/", dist_info))] == []
    assert "asyncdal/py.typed" in names
    # What `asyncdal migrations init` writes comes from the package.
    for template in ("alembic.ini", "env.py", "script.py.mako"):
        assert f"asyncdal/ops/templates/{template}" in names
    assert [name for name in names if "catalog" in name.split("/")] == []
    # Every module of the source tree, and no cache or stray file beside them.
    assert {name for name in names if name.startswith("asyncdal/")} == _source_files()


def test_the_wheel_declares_the_command_and_the_extras(artefacts: Artefacts) -> None:
    with zipfile.ZipFile(artefacts.wheel) as archive:
        dist_info = f"asyncdal-{VERSION}.dist-info"
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = email.parser.Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
    assert "asyncdal = asyncdal.ops._cli:main" in entry_points
    # The pytest plugin loads by itself where the wheel is installed.
    assert "[pytest11]\nasyncdal = asyncdal.testing.plugin" in entry_points
    assert set(metadata.get_all("Provides-Extra") or []) == EXTRAS
    # The catalog and the development tools are no dependency of the library.
    requirements = metadata.get_all("Requires-Dist") or []
    for unpublished in ("asyncdal-catalog", "mypy", "ruff", "build"):
        assert unpublished not in " ".join(requirements)
    # httpx only for the testing extra's app client, never for the core.
    core = [requirement for requirement in requirements if "extra ==" not in requirement]
    assert [requirement for requirement in core if requirement.startswith("httpx")] == []


def test_the_sdist_holds_the_sources_and_no_local_state(artefacts: Artefacts) -> None:
    prefix = f"asyncdal-{VERSION}/"
    with tarfile.open(artefacts.sdist) as archive:
        names = archive.getnames()
    assert all(name.startswith(prefix) for name in names)
    relative = {name.removeprefix(prefix) for name in names}
    assert {"PKG-INFO", "pyproject.toml", "README.md", "src/asyncdal/py.typed"} <= relative
    local_state = {".venv", ".data", ".env", ".git", "dist", "__pycache__", ".mypy_cache"}
    assert [name for name in relative if local_state & set(name.split("/"))] == []


# -- the core alone ----------------------------------------------------------------------------


def test_the_core_imports_no_integration_and_not_the_outbox(core: Environment) -> None:
    probe = core.probe("import asyncdal")
    assert probe.loaded == []
    # Not even installed: the core dependencies pull in no extra's.
    assert probe.installed == []


def test_the_core_runs_the_command_line(core: Environment) -> None:
    # `python -m asyncdal`; the outbox tests below run the `asyncdal` script itself.
    done = core.run("python", "-m", "asyncdal", "--help")
    assert done.returncode == 0, done.stderr
    assert "outbox" in done.stdout


# -- the outbox extra alone --------------------------------------------------------------------


def test_the_outbox_extra_imports_the_worker_without_metrics(outbox: Environment) -> None:
    probe = outbox.probe(
        "from asyncdal.outbox import Outbox, OutboxWorker, RabbitRelay, WorkerStats",
        ("prometheus_client", "aio_pika", "fastapi", "dependency_injector"),
    )
    # The relay's aio-pika comes with the extra; metrics are the metrics extra's.
    assert probe.loaded == ["aio_pika"]
    assert probe.installed == ["aio_pika"]


def test_serving_worker_metrics_without_the_metrics_extra_is_a_clear_error(
    outbox: Environment,
) -> None:
    done = outbox.run(
        "asyncdal",
        "outbox",
        "run",
        "--handlers",
        "nowhere:handlers",
        env={"OUTBOX__METRICS_PORT": "9", "DATABASE_URL": "postgresql://u@127.0.0.1/none"},
    )
    assert done.returncode == 2
    assert "OUTBOX__METRICS_PORT" in done.stderr
    assert "asyncdal[outbox,metrics]" in done.stderr
    assert "Traceback" not in done.stderr


PROBE_HANDLERS = '''
"""Handlers of the packaging test: the first event handled stops the worker."""

import os
import signal

from asyncdal.outbox import Handlers

handlers = Handlers()


@handlers.on("packaging.probe")
async def stop_after(payload):
    # SIGTERM, as an orchestrator sends it: the worker settles this event, then exits.
    os.kill(os.getpid(), signal.SIGTERM)
'''


@pytest.fixture
async def outbox_database(server_url: str) -> AsyncIterator[URL]:
    """A throwaway database with the outbox tables and one event in them."""
    from asyncdal.testing import create_test_database, drop_test_database

    url = await create_test_database(server_url, prefix="packaging_test")
    try:
        database = Database("main", DatabaseSettings(url=plain(url), pool="null"))
        try:
            metadata = MetaData()
            outbox_tables(metadata)
            async with database.engine.begin() as connection:
                await connection.run_sync(metadata.create_all)
            async with database.unit_of_work() as uow:
                await Outbox.of(uow).add("packaging.probe", {"n": 1})
                await uow.commit()
        finally:
            await database.dispose()
        yield url
    finally:
        await drop_test_database(url)


async def test_the_outbox_extra_runs_a_worker_without_prometheus(
    outbox: Environment, outbox_database: URL
) -> None:
    (outbox.workdir / "probe_handlers.py").write_text(PROBE_HANDLERS)
    done = outbox.run(
        "asyncdal",
        "outbox",
        "run",
        "--handlers",
        "probe_handlers:handlers",
        env={
            "DATABASE_URL": plain(outbox_database),
            "PYTHONPATH": str(outbox.workdir),
            "OUTBOX__POLL_INTERVAL": "0.2",
        },
    )
    # 0: stopped by its SIGTERM handler (killed by the signal, it would be -15).
    assert done.returncode == 0, done.stderr
    connection = await asyncpg.connect(plain(outbox_database.set(drivername="postgresql")))
    try:
        statuses = await connection.fetch("SELECT status FROM asyncdal_outbox")
    finally:
        await connection.close()
    assert [row["status"] for row in statuses] == ["done"]


# -- the migrations extra alone ----------------------------------------------------------------


def test_the_migrations_extra_runs_the_environment_init_writes(
    environments: dict[str | None, Future[Environment]],
) -> None:
    migrations = environments["migrations"].result()
    (migrations.workdir / "models.py").write_text(
        "from sqlalchemy import MetaData\nmetadata = MetaData()\n"
    )
    init = migrations.run("asyncdal", "migrations", "init", "--metadata", "models:metadata")
    assert init.returncode == 0, init.stderr
    (migrations.workdir / "migrations" / "versions" / "0001_probe.py").write_text(
        'revision = "0001"\ndown_revision = None\n'
        "from alembic import op\n"
        "def upgrade():\n    op.execute('SELECT 1')\n"
        "def downgrade():\n    pass\n"
    )
    # Offline: no server needed, and the installed env.py, templates and settings all run.
    done = migrations.run("alembic", "upgrade", "head", "--sql")
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE alembic_version" in done.stdout
    assert "VALUES ('0001')" in done.stdout


# -- every other extra alone -------------------------------------------------------------------


def test_every_extra_is_checked() -> None:
    assert set(ORDER) == EXTRAS


@pytest.mark.parametrize("extra", sorted(USES))
def test_each_extra_alone_installs_what_it_imports(
    extra: str, environments: dict[str | None, Future[Environment]]
) -> None:
    environment = environments[extra].result()
    environment.probe(USES[extra])
    if extra == "testing":
        # The pytest plugin loads by its entry point alone, with its fixtures.
        done = environment.run("python", "-m", "pytest", "--fixtures")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "asyncdal_database" in done.stdout
        assert "asyncdal_client" in done.stdout
