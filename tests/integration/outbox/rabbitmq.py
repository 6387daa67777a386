"""A RabbitMQ node of the test's own, on spare ports, to stop and start at will.

The machine's shared broker (127.0.0.1:5672) serves other test runs, so an outage test
stops a node of its own instead: ``rabbitmqctl stop_app`` closes its listener and every
connection (the broker is down for clients), ``start_app`` brings it back.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from asyncdal.testing import spare_port


class RabbitNode:
    """A running node: ``url`` for clients, :meth:`stop_app` / :meth:`start_app`."""

    def __init__(self, name: str, port: int, environment: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.url = f"amqp://guest:guest@127.0.0.1:{port}/"
        self._environment = environment

    def _ctl(self, *arguments: str) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.name, *arguments],
            check=True,
            capture_output=True,
            env=self._environment,
            timeout=60,
        )

    def accepts(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop_app(self) -> None:
        """Stop the broker (the Erlang node stays up): clients are cut off and refused."""
        self._ctl("stop_app")

    def start_app(self) -> None:
        """Start the broker again and wait until it accepts connections."""
        self._ctl("start_app")
        self._ctl("await_startup")


@contextlib.contextmanager
def throwaway_rabbitmq(os_user: str = "rabbitmq") -> Iterator[RabbitNode]:
    """Start a RabbitMQ node with its data in a temporary folder; stop and remove it after.

    Raises:
        RuntimeError: rabbitmq-server is not installed or did not start within 60 s.
    """
    if shutil.which("rabbitmq-server") is None:
        raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    folder = Path(tempfile.mkdtemp(prefix="rabbitmq-"))
    port, dist_port = spare_port(), spare_port()
    name = f"outbox-test-{uuid.uuid4().hex[:8]}@localhost"
    (folder / "enabled_plugins").write_text("[].\n")
    (folder / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
    for sub in ("mnesia", "log"):
        (folder / sub).mkdir()
    if os.geteuid() == 0:
        # Debian's wrapper runs the node as the rabbitmq user, who must own its files.
        account = pwd.getpwnam(os_user)
        for path in (folder, *folder.rglob("*")):
            os.chown(path, account.pw_uid, account.pw_gid)
    environment = {
        **os.environ,
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(folder / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
        "RABBITMQ_FEATURE_FLAGS_FILE": str(folder / "feature_flags"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": str(folder / "plugins-expand"),
    }
    node = RabbitNode(name, port, environment)
    output = folder / "server.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            ["rabbitmq-server"], cwd=folder, env=environment, stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + 60
        while not node.accepts():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = output.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"the test RabbitMQ node did not start: {tail}")
            time.sleep(0.1)  # poll interval; the deadline bounds the wait
        yield node
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            node._ctl("stop")
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)
