"""FaultProxy against a local echo server: pass, blackhole and heal, reset, cut an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from asyncdal.testing import FaultProxy
from tests.helpers import wait_until


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with FaultProxy("127.0.0.1", port) as fault_proxy:
        yield fault_proxy
    server.close()
    await server.wait_closed()


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


async def test_passes_bytes_both_ways(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await roundtrip(reader, writer, b"hello") == b"hello"
    assert proxy.connections == 1
    assert proxy.url(database="shop") == f"postgresql://postgres@127.0.0.1:{proxy.port}/shop"
    writer.close()


async def test_blackhole_holds_bytes_until_healed(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await roundtrip(reader, writer, b"one") == b"one"
    proxy.blackhole()
    writer.write(b"two")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(3), 0.2)
    proxy.heal()
    assert await asyncio.wait_for(reader.readexactly(3), 2) == b"two"
    writer.close()


async def test_reset_cuts_open_connections_and_refuses_new_ones_until_healed(
    proxy: FaultProxy,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await roundtrip(reader, writer, b"x") == b"x"
    proxy.reset()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(roundtrip(reader, writer, b"y"), 2)
    new_reader, new_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(roundtrip(new_reader, new_writer, b"z"), 2)
    proxy.heal()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await roundtrip(reader, writer, b"back") == b"back"
    writer.close()


async def test_cut_answer_forwards_the_message_and_drops_its_answer(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await roundtrip(reader, writer, b"BEGIN") == b"BEGIN"
    proxy.cut_answer_to(b"COMMIT")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(roundtrip(reader, writer, b"COMMIT"), 2)
    # One shot: the next connection works.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    assert await roundtrip(reader, writer, b"COMMIT") == b"COMMIT"
    writer.close()


def _handlers_of(proxy: FaultProxy) -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and getattr(task.get_coro(), "__qualname__", "") == "FaultProxy._accept"
    ]


async def test_stop_ends_connections_held_by_a_blackhole() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    proxy = FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1])
    await proxy.start()
    proxy.blackhole()
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    # The proxy has accepted it and holds it.
    await wait_until(lambda: proxy.connections, timeout=2, interval=0.01)
    handlers = _handlers_of(proxy)
    assert handlers
    await proxy.stop()
    assert _handlers_of(proxy) == []  # nothing left pending for the loop's close to cancel
    # Ended, not cancelled: asyncio's stream server logs a cancelled handler as an error.
    assert not any(task.cancelled() for task in handlers)
    writer.close()
    server.close()
    await server.wait_closed()
