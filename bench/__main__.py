"""``python -m bench [http|data|pooler|outbox|replicas|safety]``: raw asyncpg vs plain
SQLAlchemy vs asyncdal.

``http`` loads ``GET /products/{id}``, ``GET /products?limit=50`` and ``POST /products`` of
uvicorn-served apps with wrk (raw asyncpg, the same with ``setup(app)``, plain SQLAlchemy, the
catalog) and checks the ratios issue 15 asks for; ``data`` runs the same reads and writes
in-process without HTTP, including asyncdal's three read paths, with the CPU time per
operation; ``pooler`` measures pooler mode directly and through a PgBouncer it starts;
``outbox`` burns down a pre-filled outbox (raw asyncpg, the worker with a no-op handler and
with a one-row write) and measures the LISTEN wake-up delay; ``replicas`` starts a primary +
replica pair and measures reads on the primary alone vs spread over both, and the cost of
routing; ``safety`` the safety nets all on against off (see :mod:`bench.safety`). No argument
runs them all.
Everything runs against a fresh ``bench_<random>`` database on the server, migrated with the
repository's Alembic migrations, seeded, and dropped at the end, also on errors and Ctrl-C.

Every option can also come from the environment (``BENCH_ROUNDS``, ``BENCH_DURATION``, ...);
the command line wins.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

import asyncpg

from bench.data import DataSettings, run_data
from bench.database import ROOT, safe_url, throwaway_database
from bench.http import ENDPOINTS, HttpSettings, run_http
from bench.outbox import OutboxBenchSettings, run_outbox
from bench.pooler import run_pooler
from bench.replicas import run_replicas
from bench.runner import install_sigterm_handler, run
from bench.safety import run_safety

__all__ = ["main"]

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Failures worth one line rather than a traceback: no server, no wrk, a server that would not
# start, a database error.
_EXPECTED_FAILURES = (
    RuntimeError,
    OSError,
    asyncpg.PostgresError,
    subprocess.CalledProcessError,
)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"BENCH_{name}", default)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def _endpoints(text: str) -> tuple[str, ...]:
    known = [endpoint.key for endpoint in ENDPOINTS]
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(chosen) - set(known))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(known)}, not {text!r}")
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Throughput and CPU per operation of reads, lists and writes through raw asyncpg "
            "(a), plain SQLAlchemy (b) and asyncdal's catalog (c), in interleaved rounds, over "
            "HTTP (uvicorn + wrk) and in-process. Uses a throwaway database on the server, "
            "dropped at the end."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "part",
        nargs="?",
        choices=["http", "data", "pooler", "outbox", "replicas", "safety", "all"],
        default="all",
        help="which benchmark to run",
    )
    parser.add_argument(
        "--database-url",
        # Resolved in main(), so --help never prints a password from the environment.
        default=None,
        help="PostgreSQL server to create the throwaway database on "
        f"(default: env BENCH_DATABASE_URL, else {DEFAULT_SERVER_URL})",
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        default=_env("ROUNDS", "5"),
        help="interleaved rounds per part [env BENCH_ROUNDS]",
    )
    parser.add_argument(
        "--products",
        type=_positive_int,
        default=_env("PRODUCTS", "1000"),
        help="products seeded; ids are drawn from 1..N [env BENCH_PRODUCTS]",
    )
    http = parser.add_argument_group("http part")
    http.add_argument(
        "--duration",
        type=_positive_int,
        default=_env("DURATION", "5"),
        help="seconds of load per app, endpoint and round [env BENCH_DURATION]",
    )
    http.add_argument(
        "--slice",
        type=_positive_int,
        default=_env("SLICE", "1"),
        help=(
            "seconds per wrk run: each app's duration is cut into slices run app after app, "
            "so that drift of a noisy machine hits every app of a round alike "
            "[env BENCH_SLICE]"
        ),
    )
    http.add_argument(
        "--connections",
        type=_positive_int,
        default=_env("CONNECTIONS", "32"),
        help="wrk connections [env BENCH_CONNECTIONS]",
    )
    http.add_argument(
        "--threads",
        type=_positive_int,
        default=_env("THREADS", "2"),
        help="wrk threads [env BENCH_THREADS]",
    )
    http.add_argument(
        "--endpoints",
        type=_endpoints,
        default=_env("ENDPOINTS", ",".join(endpoint.key for endpoint in ENDPOINTS)),
        help="comma-separated endpoints to load: get, list, write [env BENCH_ENDPOINTS]",
    )
    http.add_argument(
        "--warmup",
        type=_non_negative_int,
        default=_env("WARMUP", "2"),
        help=(
            "unreported wrk seconds per app and endpoint before each round (its servers are "
            "new); 0 skips [env BENCH_WARMUP]"
        ),
    )
    data = parser.add_argument_group("data part")
    data.add_argument(
        "--data-duration",
        type=_positive_float,
        default=_env("DATA_DURATION", "3"),
        help="seconds per path per round [env BENCH_DATA_DURATION]",
    )
    data.add_argument(
        "--concurrency",
        type=_positive_int,
        default=_env("CONCURRENCY", "16"),
        help="concurrent tasks [env BENCH_CONCURRENCY]",
    )
    data.add_argument(
        "--data-warmup",
        type=_non_negative_float,
        default=_env("DATA_WARMUP", "1"),
        help="unreported seconds per path before round 1 [env BENCH_DATA_WARMUP]",
    )
    outbox = parser.add_argument_group("outbox part")
    outbox.add_argument(
        "--outbox-events",
        type=_positive_int,
        default=_env("OUTBOX_EVENTS", "20000"),
        help="events pre-filled per path per round [env BENCH_OUTBOX_EVENTS]",
    )
    outbox.add_argument(
        "--outbox-rounds",
        type=_positive_int,
        default=_env("OUTBOX_ROUNDS", "3"),
        help="interleaved outbox rounds [env BENCH_OUTBOX_ROUNDS]",
    )
    return parser


def _revision() -> str:
    """The repository's commit (``-dirty`` with local changes): the code the numbers belong to."""
    try:
        described = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return described.stdout.strip() or "unknown"


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or just ``error``."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the asked-for parts, and clean up; return the exit status."""
    args = _parser().parse_args(argv)
    http_settings = HttpSettings(
        rounds=args.rounds,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        products=args.products,
        endpoints=args.endpoints,
        slice_seconds=args.slice,
    )
    data_settings = DataSettings(
        rounds=args.rounds,
        duration=args.data_duration,
        warmup=args.data_warmup,
        concurrency=args.concurrency,
        products=args.products,
    )
    server_url = args.database_url or os.environ.get("BENCH_DATABASE_URL") or DEFAULT_SERVER_URL
    if args.part in ("http", "all") and shutil.which("wrk") is None:
        print("bench: error: the http part needs wrk (apt-get install wrk)", file=sys.stderr)
        return 1
    install_sigterm_handler()
    started = time.monotonic()
    print(
        f"asyncdal bench at {_revision()}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; server {safe_url(server_url)}"
    )
    try:
        if args.part != "replicas":
            with throwaway_database(server_url, args.products) as url:
                print(f"throwaway database {safe_url(url)}: migrated, {args.products} products")
                if args.part in ("http", "all"):
                    run(run_http(url, http_settings))
                if args.part in ("data", "all"):
                    run(run_data(url, data_settings))
                if args.part in ("pooler", "all"):
                    run(run_pooler(url, data_settings))
                if args.part in ("safety", "all"):
                    run(run_safety(url, data_settings))
                if args.part in ("outbox", "all"):
                    outbox_settings = OutboxBenchSettings(
                        rounds=args.outbox_rounds, events=args.outbox_events
                    )
                    run(run_outbox(url, outbox_settings))
        # The replica part brings its own primary + replica pair.
        if args.part in ("replicas", "all"):
            run_replicas(data_settings)
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped, throwaway database dropped", file=sys.stderr)
        return 130
    except Exception as error:
        failures = _leaves(error)
        if not all(isinstance(failure, _EXPECTED_FAILURES) for failure in failures):
            raise
        # Everything started has been stopped and the database dropped by now.
        for failure in failures:
            print(f"bench: error: {failure}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.monotonic() - started:.0f}s; throwaway database dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
