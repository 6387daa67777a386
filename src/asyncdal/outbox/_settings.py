"""Worker settings, from ``OUTBOX__<FIELD>`` environment variables and ``.env``.

Example:
    ``OUTBOX__BATCH_SIZE=500 OUTBOX__CONCURRENCY=64 asyncdal outbox run --handlers app:handlers``
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from asyncdal.errors import ConfigurationError
from asyncdal.orm._budget import ExtraPool

__all__ = ["OUTBOX_WORKER_POOL", "OutboxSettings", "load_outbox_settings", "outbox_pools"]


class OutboxSettings(BaseSettings):
    """How an outbox worker claims, runs, retries and settles events."""

    model_config = SettingsConfigDict(
        env_prefix="OUTBOX__",
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
    )

    database: str = "main"
    """The named database (``DB__<NAME>__*``) whose outbox table is served."""
    batch_size: int = Field(default=200, ge=1, le=10_000)
    """Events claimed per round trip."""
    processes: int = Field(default=0, ge=0)
    """Outbox worker processes run against the database (``make worker``, ``asyncdal outbox
    run``): the app's connection budget counts each one's own pool (claim, settle, LISTEN and a
    spare: 4) and its handler pool."""
    concurrency: int = Field(default=32, ge=1)
    """Handlers running at once (asyncio tasks; sync handlers also share a thread pool)."""
    handler_pool_size: int | None = Field(default=None, ge=1)
    """Connections of the handlers' own pool (default: ``concurrency``); opened on demand."""
    transaction_size: int = Field(default=50, ge=1, le=10_000)
    """Events whose handlers take a unit of work run up to this many in one transaction on
    the worker's own handler pool, which also marks them done: their writes and their
    completion commit together (one BEGIN/COMMIT and one settle for them all). A handler that
    fails rolls the transaction back and each event runs again alone. 1: a transaction per
    event, settled apart."""
    poll_interval: float = Field(default=1.0, gt=0)
    """Seconds between claims when idle and no NOTIFY arrives (the fallback to LISTEN)."""
    lease_seconds: float = Field(default=30.0, gt=0)
    """How long a claim is valid; extended by the heartbeat while handlers run."""
    heartbeat_seconds: float | None = Field(default=None, gt=0)
    """Seconds between lease extensions (default: a third of ``lease_seconds``)."""
    handler_timeout: float = Field(default=30.0, gt=0)
    """Seconds a handler may run before it is cancelled and the event retried."""
    max_attempts: int = Field(default=10, ge=1)
    """Attempts before an event becomes ``dead`` (its last error is kept)."""
    backoff_initial: float = Field(default=1.0, ge=0)
    """Seconds of the first retry's backoff ceiling; it doubles per attempt (full jitter)."""
    backoff_max: float = Field(default=300.0, ge=0)
    """The largest backoff in seconds."""
    ordered: bool = False
    """Handle events of the same key one at a time, in insertion order (all workers of one
    outbox must agree)."""
    shutdown_timeout: float = Field(default=10.0, ge=0)
    """On SIGTERM, seconds in-flight handlers get to finish before their leases are released."""
    retention_seconds: float | None = Field(default=7 * 24 * 3600.0, gt=0)
    """Done events older than this are deleted; unset keeps them forever."""
    inbox_retention_seconds: float | None = Field(default=7 * 24 * 3600.0, gt=0)
    """Inbox entries (:func:`~asyncdal.outbox.first_delivery`) older than this are deleted;
    unset keeps them forever. Keep it longer than an event can take to be delivered again."""
    maintenance_seconds: float = Field(default=5.0, gt=0)
    """Seconds between reclaiming expired leases, retention deletes, and the pending-age gauge."""
    listen_check_seconds: float = Field(default=30.0, gt=0)
    """Seconds between the worker's checks that its ``LISTEN`` hears (a NOTIFY it sends
    itself); when one does not come back, it says so once and relies on polling."""
    worker_name: str | None = None
    """Lease owner shown in the table (default: ``<host>:<pid>``)."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve Prometheus metrics on this port (``asyncdal outbox run`` only)."""
    metrics_address: str = "127.0.0.1"
    """The address the metrics are served on (``0.0.0.0`` for every interface)."""
    relay_url: SecretStr | None = None
    """AMQP URL of the RabbitMQ the relay handler publishes to (``amqp://user:pass@host/``)."""
    relay_exchange: str = "asyncdal.events"
    """Topic exchange the relay publishes to, with the event type as routing key."""

    @model_validator(mode="after")
    def _check(self) -> OutboxSettings:
        heartbeat = self.effective_heartbeat_seconds
        if heartbeat >= self.lease_seconds:
            raise ValueError(
                "HEARTBEAT_SECONDS: must be shorter than LEASE_SECONDS, or leases expire "
                "while their handlers still run"
            )
        return self

    @property
    def effective_heartbeat_seconds(self) -> float:
        """The heartbeat interval in force."""
        if self.heartbeat_seconds is not None:
            return self.heartbeat_seconds
        return self.lease_seconds / 3

    @property
    def effective_handler_pool_size(self) -> int:
        """The handlers' pool size in force."""
        return self.handler_pool_size if self.handler_pool_size is not None else self.concurrency


def load_outbox_settings(**overrides: Any) -> OutboxSettings:
    """Read and validate the worker settings, naming every bad variable.

    Raises:
        ConfigurationError: e.g. ``OUTBOX__BATCH_SIZE: Input should be greater than or equal
            to 1``; never showing the relay's password.
    """
    try:
        return OutboxSettings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            field = "__".join(str(part).upper() for part in error["loc"])
            head, sep, rest = message.partition(": ")
            if sep and head.isupper() and " " not in head:
                field, message = head, rest
            lines.append(f"OUTBOX__{field}: {message}" if field else message)
        raise ConfigurationError(
            "invalid outbox settings:\n  " + "\n  ".join(sorted(lines))
        ) from None


OUTBOX_WORKER_POOL = 4
"""Connections an outbox worker process holds itself: claim, settle, LISTEN and a spare."""


def outbox_pools(settings: OutboxSettings | None = None) -> list[ExtraPool]:
    """The connections ``settings.processes`` outbox worker processes hold (their own and their
    handlers'), for the connection budget: pass them to ``Databases.from_settings(...,
    extra_pools=...)``.

    Args:
        settings: the workers' settings; None reads ``OUTBOX__*`` from the environment, and
            counts nothing when those do not validate (the worker reports its own bad settings).
    """
    if settings is None:
        try:
            settings = OutboxSettings()
        except ValidationError:
            return []
    return [
        ExtraPool(settings.database, "outbox worker", OUTBOX_WORKER_POOL, settings.processes),
        ExtraPool(
            settings.database,
            "outbox handlers",
            settings.effective_handler_pool_size,
            settings.processes,
        ),
    ]
