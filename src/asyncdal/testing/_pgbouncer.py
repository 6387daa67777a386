"""A real PgBouncer in transaction mode for tests: started on a spare port in front of a server,
paused, resumed and restarted at will (a failover window, a pooler upgrade), stopped at the end.

Example:
    >>> with pgbouncer(cluster.url, pool_size=5) as bouncer:
    ...     url = bouncer.url("catalog")                # postgresql://postgres@127.0.0.1:<port>/...
    ...     bouncer.pause()                             # queries wait...
    ...     bouncer.resume()                            # ...and go on
    ...     bouncer.restart()                           # every client connection is cut
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["PgBouncer", "pgbouncer", "run_pgbouncer"]

_START_SECONDS = 10.0
_ADMIN_SECONDS = 30.0


def _spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """A PgBouncer process and its configuration (see :func:`pgbouncer`).

    Attributes:
        port: the 127.0.0.1 port it listens on (the same after :meth:`restart`).
        user: the user clients (and the admin console) log in as.
    """

    def __init__(self, folder: Path, port: int, user: str, account: pwd.struct_passwd | None):
        self._folder = folder
        self._account = account
        self._process: subprocess.Popen[bytes] | None = None
        self.port = port
        self.user = user

    def url(self, database: str) -> str:
        """A URL of ``database`` through the pooler (trust authentication)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start it and wait until it accepts connections.

        Raises:
            RuntimeError: it exited, or did not listen within 10 s.
        """
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and config, no shell
            [_binary(), str(self._folder / "pgbouncer.ini")],
            user=self._account.pw_uid if self._account else None,
            group=self._account.pw_gid if self._account else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + _START_SECONDS
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer exited with {self._process.returncode}: {self.log()[-2000:]}"
                )
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("pgbouncer did not start listening within 10 s")
            time.sleep(0.05)  # poll interval; the deadline bounds the wait

    def stop(self, *, immediate: bool = False) -> None:
        """Stop it: a safe shutdown (SIGINT: transactions finish first), or an immediate one
        (SIGTERM: every connection cut at once). Killed after 10 s either way."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM if immediate else signal.SIGINT)
        try:
            process.wait(_START_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop it at once (every client connection cut) and start it again on its port."""
        self.stop(immediate=True)
        self.start()

    def pause(self) -> None:
        """``PAUSE``: wait until every server connection is released; from then on queries
        wait (clients stay connected) until :meth:`resume`."""
        self.admin("PAUSE")

    def resume(self) -> None:
        """``RESUME`` after :meth:`pause`."""
        self.admin("RESUME")

    def admin(self, command: str) -> str:
        """Run ``command`` on the admin console (``SHOW POOLS``, ``PAUSE``...); its output.

        Raises:
            subprocess.CalledProcessError: the console refused it.
            subprocess.TimeoutExpired: no answer within 30 s.
        """
        result = subprocess.run(  # noqa: S603 - the server's own client, no shell
            [
                _psql(),
                *("-h", "127.0.0.1", "-p", str(self.port), "-U", self.user),
                *("-d", "pgbouncer", "-Atc", command),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=_ADMIN_SECONDS,
        )
        return result.stdout.strip()

    def log(self) -> str:
        """Its log so far."""
        log = self._folder / "pgbouncer.log"
        return log.read_text(errors="replace") if log.exists() else ""


def _binary() -> str:
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
    return binary


def _psql() -> str:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))
    found = str(candidates[-1]) if candidates else shutil.which("psql")
    if found is None:
        raise RuntimeError("psql is not installed")
    return found


@contextmanager
def pgbouncer(
    server_url: str, *, pool_size: int = 5, os_user: str = "postgres"
) -> Iterator[PgBouncer]:
    """Run a PgBouncer in ``pool_mode = transaction`` in front of ``server_url``.

    It listens on a spare 127.0.0.1 port, trusts the URL's user (also as its admin, for
    ``PAUSE``/``RESUME``), runs as ``os_user`` (it refuses to run as root), and is stopped
    and cleaned up on exit.

    Args:
        server_url: the PostgreSQL server behind it (trust or no authentication).
        pool_size: PgBouncer's ``default_pool_size``: server connections per user and database.
        os_user: the account to run it as when this process is root.

    Raises:
        RuntimeError: pgbouncer is not installed, or did not start within 10 s.
    """
    _binary()
    server = make_url(server_url)
    user = server.username or "postgres"
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    port = _spare_port()
    (folder / "userlist.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder}/userlist.txt\nadmin_users = {user}\n"
        f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 1000\n"
        "ignore_startup_parameters = extra_float_digits\n"
        f"logfile = {folder}/pgbouncer.log\npidfile = {folder}/pgbouncer.pid\n"
    )
    account = pwd.getpwnam(os_user) if os.geteuid() == 0 else None
    if account is not None:
        for path in (folder, *folder.iterdir()):
            os.chown(path, account.pw_uid, account.pw_gid)
    bouncer = PgBouncer(folder, port, user, account)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def run_pgbouncer(
    server_url: str, *, pool_size: int = 5, os_user: str = "postgres"
) -> Iterator[int]:
    """Run a PgBouncer in ``pool_mode = transaction`` in front of ``server_url``; yield its port.

    The same as :func:`pgbouncer`, for callers that need only the port.
    """
    with pgbouncer(server_url, pool_size=pool_size, os_user=os_user) as bouncer:
        yield bouncer.port
