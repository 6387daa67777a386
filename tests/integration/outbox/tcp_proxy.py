"""A TCP forwarder the tests can cut and restore: a broker outage seen from one client,
without stopping the machine's shared RabbitMQ that other test runs use."""

from __future__ import annotations

import asyncio
import contextlib

from asyncdal.testing import spare_port


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``target``; :meth:`stop` refuses and cuts connections."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = spare_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Stop listening and close every forwarded connection (both sides)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self._writers -= {writer, upstream_writer}
