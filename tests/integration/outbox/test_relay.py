"""The RabbitMQ relay against real brokers: a node of the test's own for the outage (stopped
and started again), the machine's shared one (127.0.0.1:5672) for a broker that refuses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractQueue

from asyncdal import Database
from asyncdal.outbox import ANY_EVENT, Handlers, RabbitRelay
from tests.helpers import wait_until
from tests.integration.outbox.conftest import insert_events, running_worker
from tests.integration.outbox.rabbitmq import throwaway_rabbitmq

BROKER = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
async def broker_queue() -> AsyncIterator[tuple[str, AbstractQueue]]:
    """A fresh topic exchange and a queue bound to all of it; deleted afterwards."""
    try:
        connection = await aio_pika.connect(BROKER, timeout=5)
    except (OSError, aio_pika.exceptions.AMQPConnectionError) as error:
        pytest.fail(f"no RabbitMQ answers at 127.0.0.1:5672 ({error}); start rabbitmq-server")
    exchange_name = f"outbox-test-{uuid.uuid4().hex[:8]}"
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")
        try:
            yield exchange_name, queue
        finally:
            await exchange.delete()


async def _drain(queue: AbstractQueue, into: dict[str, aio_pika.abc.AbstractMessage]) -> int:
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        into[str(message.message_id)] = message
    return len(into)


async def test_relay_publishes_with_confirms_and_survives_an_outage(
    database: Database, sql: asyncpg.Connection
) -> None:
    """On a RabbitMQ node of the test's own: events arrive in a real queue; with the broker
    stopped they stay pending; when it is back they are delivered."""
    exchange_name = "catalog.events"
    with throwaway_rabbitmq() as node:
        connection = await aio_pika.connect(node.url, timeout=10)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("product-events", durable=True)
        await queue.bind(exchange, "product.#")
        relay = RabbitRelay(node.url, exchange_name)
        received: dict[str, aio_pika.abc.AbstractMessage] = {}
        await insert_events(sql, 20, event_type="product.created")
        settings = {"backoff_initial": 0.05, "backoff_max": 0.2, "max_attempts": 1000}
        async with running_worker(database, Handlers({ANY_EVENT: relay}), **settings) as worker:
            await wait_until(lambda: _drain(queue, received) if len(received) < 20 else True)
            await wait_until(lambda: worker.stats.done == 20)
            first = await sql.fetch("SELECT id, payload::text FROM asyncdal_outbox ORDER BY id")
            assert set(received) == {str(row["id"]) for row in first}
            message = received[str(first[0]["id"])]
            assert message.type == "product.created"
            assert message.routing_key == "product.created"
            assert message.content_type == "application/json"
            assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
            assert json.loads(message.body) == json.loads(first[0]["payload"])
            with contextlib.suppress(Exception):
                await connection.close()  # the test's own consumer goes down with the broker

            await asyncio.to_thread(node.stop_app)
            assert not node.accepts()
            await insert_events(sql, 10, event_type="product.updated")
            # Every new event has been tried and failed at least once, and none is done.
            await wait_until(
                lambda: sql.fetchval(
                    "SELECT bool_and(attempts >= 2) FROM asyncdal_outbox "
                    "WHERE event_type = 'product.updated'"
                )
            )
            assert worker.stats.done == 20
            statuses = await sql.fetch(
                "SELECT DISTINCT status FROM asyncdal_outbox WHERE event_type = 'product.updated'"
            )
            assert {r[0] for r in statuses} <= {"pending", "leased"}
            error = await sql.fetchval(
                "SELECT last_error FROM asyncdal_outbox WHERE event_type = 'product.updated' "
                "LIMIT 1"
            )
            assert "guest" not in error  # the broker's password is never written

            await asyncio.to_thread(node.start_app)
            await wait_until(lambda: worker.stats.done == 30)
        # The durable queue kept the first 20 (already read) and got the other 10.
        connection = await aio_pika.connect(node.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("product-events", durable=True)
            await wait_until(lambda: _drain(queue, received) if len(received) < 30 else True)
    assert len(received) == 30
    assert await sql.fetchval("SELECT count(*) FROM asyncdal_outbox WHERE status = 'done'") == 30


async def test_event_is_not_done_when_the_broker_refuses_it(
    database: Database, sql: asyncpg.Connection, broker_queue: tuple[str, AbstractQueue]
) -> None:
    """A full queue that rejects publishes makes the broker nack: the event is retried, not
    done; once the broker accepts, it is done."""
    exchange_name, _ = broker_queue
    connection = await aio_pika.connect(BROKER, timeout=5)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(exchange_name)
        full = await channel.declare_queue(
            exclusive=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
        )
        await full.bind(exchange, "#")
        relay = RabbitRelay(BROKER, exchange_name)
        await insert_events(sql, 1, event_type="product.created")
        settings = {"backoff_initial": 0.05, "backoff_max": 0.1, "max_attempts": 1000}
        async with running_worker(database, Handlers({ANY_EVENT: relay}), **settings) as worker:
            await wait_until(lambda: worker.stats.retried >= 2)
            # Nacks do not cost the relay its connection (other publishes share it).
            kept = relay._connection
            retried = worker.stats.retried
            await wait_until(lambda: worker.stats.retried >= retried + 2)
            assert kept is not None
            assert relay._connection is kept
            assert not kept.is_closed
            assert worker.stats.done == 0
            error = await sql.fetchval("SELECT last_error FROM asyncdal_outbox")
            assert "DeliveryError" in error
            await full.unbind(exchange, "#")
            await wait_until(lambda: worker.stats.done == 1)


async def test_event_no_queue_takes_is_not_done(
    database: Database, sql: asyncpg.Connection
) -> None:
    """Published to an exchange with no queue bound for it, a message would be confirmed and
    dropped: the broker returns it, the event is retried; once a queue is bound, it arrives."""
    try:
        connection = await aio_pika.connect(BROKER, timeout=5)
    except (OSError, aio_pika.exceptions.AMQPConnectionError) as error:
        pytest.fail(f"no RabbitMQ answers at 127.0.0.1:5672 ({error}); start rabbitmq-server")
    exchange_name = f"outbox-test-{uuid.uuid4().hex[:8]}"
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        try:
            relay = RabbitRelay(BROKER, exchange_name)
            await insert_events(sql, 1, event_type="product.created")
            settings = {"backoff_initial": 0.05, "backoff_max": 0.1, "max_attempts": 1000}
            handlers = Handlers({ANY_EVENT: relay})
            async with running_worker(database, handlers, **settings) as worker:
                await wait_until(lambda: worker.stats.retried >= 2)
                assert worker.stats.done == 0
                error = await sql.fetchval("SELECT last_error FROM asyncdal_outbox")
                assert "PublishError" in error
                queue = await channel.declare_queue(exclusive=True, auto_delete=True)
                await queue.bind(exchange, "product.#")
                await wait_until(lambda: worker.stats.done == 1)
            received: dict[str, aio_pika.abc.AbstractMessage] = {}
            await wait_until(lambda: _drain(queue, received))
            event_id = await sql.fetchval("SELECT id FROM asyncdal_outbox")
            assert set(received) == {str(event_id)}
        finally:
            await exchange.delete()
