"""A handler that relays outbox events to RabbitMQ, done only once the broker confirmed.

It publishes each event to a topic exchange with the event type as routing key, as a
persistent JSON message whose ``message_id`` is the event id (consumers deduplicate on it: the
relay delivers at least once). The channel uses publisher confirms, and ``publish`` returns
only when the broker has taken the message, so the worker marks the event done only then; a
refused or unconfirmed publish raises, and the event is retried with backoff. With the broker
down, events stay pending and go out when it is back.

Publishes are mandatory: a message no queue is bound for would be confirmed and dropped, so
the broker's return makes the attempt fail instead (the event is retried, and dead after the
last attempt, with a ``PublishError`` naming the routing key). Pass ``mandatory=False`` when
dropping events nobody subscribed to is what you want.

Example:
    >>> handlers = Handlers({ANY_EVENT: RabbitRelay("amqp://guest:guest@127.0.0.1/")})
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from asyncdal.outbox._event import OutboxEvent

__all__ = ["RabbitRelay"]


class RabbitRelay:
    """Publish events to a RabbitMQ topic exchange with publisher confirms.

    Args:
        url: AMQP URL (``amqp://user:password@host:port/vhost``); never logged.
        exchange: the topic exchange (declared durable if missing).
        connect_timeout: seconds to connect before the attempt fails.
        publish_timeout: seconds to wait for the broker's confirm.
        mandatory: refuse (fail the attempt) when no queue takes the message.
    """

    def __init__(
        self,
        url: str,
        exchange: str = "asyncdal.events",
        *,
        connect_timeout: float = 5.0,
        publish_timeout: float = 10.0,
        mandatory: bool = True,
    ) -> None:
        self._url = url
        self.exchange_name = exchange
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self.mandatory = mandatory
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._connecting = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RabbitRelay(exchange={self.exchange_name!r})"

    async def _ready(self) -> AbstractExchange:
        if self._exchange is not None and self._channel is not None and not self._channel.is_closed:
            return self._exchange
        async with self._connecting:
            channel = self._channel
            if self._exchange is not None and channel is not None and not channel.is_closed:
                return self._exchange  # another task connected meanwhile
            await self._drop()
            # A plain (not robust) connection: a failed publish must fail the attempt now, and
            # the worker's retry with backoff is the reconnect policy.
            self._connection = await aio_pika.connect(self._url, timeout=self._connect_timeout)
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=self.mandatory
            )
            self._exchange = await self._channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            return self._exchange

    async def __call__(self, event: OutboxEvent) -> None:
        """Publish ``event`` and return once the broker confirmed it."""
        exchange = await self._ready()
        message = aio_pika.Message(
            body=json.dumps(event.payload, default=str).encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(event.id),
            type=event.event_type,
            timestamp=datetime.now(UTC),
            headers={"key": event.key} if event.key is not None else {},
        )
        try:
            await exchange.publish(
                message,
                routing_key=event.event_type,
                mandatory=self.mandatory,
                timeout=self._publish_timeout,
            )
        except aio_pika.exceptions.DeliveryError:
            # A nack or a return: the broker answered, the channel is fine, and the other
            # handlers' publishes on it go on.
            raise
        except BaseException:
            # The channel may be half-broken; start over at the next attempt.
            await self._drop()
            raise

    async def _drop(self) -> None:
        connection, self._connection, self._channel, self._exchange = (
            self._connection,
            None,
            None,
            None,
        )
        if connection is not None and not connection.is_closed:
            # Closing a broken connection: nothing worth reporting can come of it.
            with contextlib.suppress(Exception):
                await connection.close()

    async def aclose(self) -> None:
        """Close the broker connection (the worker calls this when it stops)."""
        await self._drop()
