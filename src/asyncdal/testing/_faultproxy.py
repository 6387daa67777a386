"""A TCP fault proxy for tests: put it between an app and PostgreSQL, then break the link.

- :meth:`FaultProxy.blackhole` stops every byte both ways, on open connections and new ones,
  without closing anything: the peers wait, as behind a dropped route. :meth:`heal` lets the
  held bytes through again (as TCP retransmission would).
- :meth:`FaultProxy.reset` cuts every open connection with a TCP reset and resets new ones at
  once, as a server host that went away would, until :meth:`heal`.
- :meth:`FaultProxy.cut_answer_to` forwards the first client message containing some bytes
  (``b"COMMIT"``), then resets that connection when the server's answer arrives, before the
  client sees it: the server did the work, the client cannot know.

Example:
    >>> async with FaultProxy("127.0.0.1", 5432) as proxy:
    ...     url = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
    ...     proxy.blackhole()
    ...     ...                                  # requests time out, the breaker opens
    ...     proxy.heal()
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

__all__ = ["FaultProxy"]

_CHUNK = 65536


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    cut_next_answer: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def cut(self) -> None:
        _reset(self.client)
        if self.server is not None:
            self.server.transport.abort()


class FaultProxy:
    """An asyncio TCP proxy on ``127.0.0.1`` to ``upstream_host:upstream_port``.

    Args:
        upstream_host: the server's host.
        upstream_port: the server's port.

    Attributes:
        port: where the proxy listens (a free port picked by the OS), once started.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        # The server's handler tasks: in blackhole mode one can wait before it has a link's
        # pumps, and stop() must end those too.
        self._handlers: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._resetting = False
        self._cut_pattern: bytes | None = None

    @property
    def connections(self) -> int:
        """Client connections open through the proxy now."""
        return len(self._links)

    def url(self, user: str = "postgres", database: str = "postgres") -> str:
        """A ``postgresql://`` URL through the proxy (no password)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    async def start(self) -> None:
        """Listen on a free port."""
        self._stopping = False
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Cut every connection and stop listening."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.cut()
        tasks = [task for link in list(self._links) for task in link.tasks]
        tasks += [task for task in self._handlers if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def blackhole(self) -> None:
        """Hold every byte, both ways, on open and new connections, until :meth:`heal`."""
        self._flowing.clear()

    def reset(self) -> None:
        """Reset every open connection, and new ones as they come, until :meth:`heal`."""
        self._resetting = True
        for link in list(self._links):
            link.cut()

    def cut_answer_to(self, pattern: bytes) -> None:
        """Forward the next client message containing ``pattern``, then reset that connection
        when the server answers, before the answer reaches the client (one shot)."""
        self._cut_pattern = pattern

    def heal(self) -> None:
        """Back to a working link; held bytes are delivered."""
        self._resetting = False
        self._cut_pattern = None
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        if self._resetting:
            _reset(writer)
            return
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        self._links.add(link)
        try:
            await self._flowing.wait()
            try:
                upstream_reader, link.server = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                _reset(writer)
                return
            link.tasks = [
                asyncio.create_task(self._pump(reader, link.server, link, upstream=True)),
                asyncio.create_task(self._pump(upstream_reader, writer, link, upstream=False)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # Cancelled by stop(): end normally, as asyncio's stream server (3.11) logs a
            # handler task that ends cancelled as an error.
            if not self._stopping:
                raise
        finally:
            self._handlers.discard(handler)
            self._links.discard(link)
            writer.transport.abort()
            if link.server is not None:
                link.server.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        upstream: bool,
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                await self._flowing.wait()
                if self._resetting:
                    link.cut()
                    return
                if not upstream and link.cut_next_answer:
                    link.cut()
                    return
                if upstream and self._cut_pattern is not None and self._cut_pattern in data:
                    self._cut_pattern = None
                    link.cut_next_answer = True
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended: end the other, as a plain TCP relay would.
            if self._resetting:
                link.cut()
            else:
                writer.transport.abort()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
