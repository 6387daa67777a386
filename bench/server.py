"""Serve one of the apps in ``bench.apps`` with uvicorn: ``python -m bench.server KIND PORT``.

The benchmark starts one of these per app (one worker each) and stops it with SIGTERM, which
uvicorn turns into a graceful shutdown that runs the app's lifespan exit (pools closed). The
database URL comes in ``BENCH_SERVER_DATABASE_URL`` rather than argv, so a password never
shows in ``ps``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

import uvicorn

from bench.apps import APPS

__all__ = ["DATABASE_URL_VARIABLE", "PARENT_PID_VARIABLE", "main"]

DATABASE_URL_VARIABLE = "BENCH_SERVER_DATABASE_URL"
PARENT_PID_VARIABLE = "BENCH_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Get SIGTERM when the benchmark process dies, even by SIGKILL, so no server outlives it."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # The parent may have died before prctl took effect.
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if expected is not None and os.getppid() != int(expected):
        sys.exit("bench.server: the benchmark that started this server is gone")


def main(argv: list[str] | None = None) -> None:
    """Serve app KIND on 127.0.0.1:PORT until SIGTERM."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in APPS:
        sys.exit(f"usage: python -m bench.server {{{','.join(APPS)}}} PORT")
    kind, port = args[0], int(args[1])
    _die_with_parent()
    app = APPS[kind](os.environ[DATABASE_URL_VARIABLE])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        workers=1,
        # An access-log line per request would cost every path the same and drown the output.
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
