"""The settings of one database grouped by concern: pool, timeouts, retry, breaker, replicas,
observability, pooler. Each group is a frozen model that checks its own fields, and what needs
two of them (the pool's kind and its sizes, the retry delays, a weight per replica).

Example:
    >>> PoolSettings(size=5).effective_size
    5
    >>> ReplicaSettings(urls="postgresql://r1,postgresql://r2").effective_weights
    (1, 1)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from asyncdal.settings._tls import check_tls, tls_parameters
from asyncdal.settings._url import parse_url

__all__ = [
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "GROUPS",
    "LAMBDA_MARKER",
    "BreakerSettings",
    "FrozenSettings",
    "ObservabilitySettings",
    "PoolKind",
    "PoolSettings",
    "PoolerSettings",
    "ReplicaSettings",
    "RetrySettings",
    "SafetySettings",
    "TimeoutSettings",
    "on_lambda",
]

PoolKind = Literal["queue", "null"]
"""``queue`` (a pool, for servers) or ``null`` (a connection per use: Lambda, scripts)."""

# A fixed-size pool by default: overflow connections are opened under load and closed again as
# soon as the pool is full, and that churn cost a third of the throughput in `make bench`.
DEFAULT_POOL_SIZE = 10
"""Connections a ``queue`` pool keeps open when ``POOL_SIZE`` is not set."""
DEFAULT_MAX_OVERFLOW = 0
"""Extra connections a ``queue`` pool may open when ``MAX_OVERFLOW`` is not set."""
LAMBDA_MARKER = "AWS_LAMBDA_FUNCTION_NAME"
"""Set in AWS Lambda, where an unset ``POOL`` means ``null``."""


def on_lambda() -> bool:
    """Whether this process runs in AWS Lambda (``AWS_LAMBDA_FUNCTION_NAME`` is set)."""
    return bool(os.environ.get(LAMBDA_MARKER))


class FrozenSettings(BaseModel):
    """Base of the settings models: frozen, strict about names, silent about input."""

    # No input in error messages: it would show the URL, password and all.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """pydantic's ``model_copy``, refusing a key that is no field of this model.

        ``model_copy`` validates nothing, so a flat name that moved into a group
        (``pool_size``, now ``pool.size``) would be stored as a stray attribute and silently do
        nothing; ``DatabaseSettings.replace`` takes the flat names.

        Raises:
            TypeError: a key of ``update`` is not a field of this model.
        """
        unknown = sorted(set(update or ()) - set(type(self).model_fields))
        if unknown:
            raise TypeError(
                f"{', '.join(unknown)}: not field(s) of {type(self).__name__} "
                "(DatabaseSettings.replace takes the flat names, e.g. pool_size=...)"
            )
        return super().model_copy(update=update, deep=deep)


class PoolSettings(FrozenSettings):
    """The connection pool: its kind, its size, and how connections are handed out."""

    kind: PoolKind | None = None
    """``queue`` (a pool for servers) or ``null`` (no pooling: Lambda, scripts, migrations).
    Unset means ``null`` under AWS Lambda and ``queue`` everywhere else (``POOL``)."""
    size: int | None = Field(default=None, ge=0)
    """Connections kept open by a ``queue`` pool (default 10). Under AWS Lambda with ``POOL``
    unset it is dropped (the pool is null there), so one configuration serves both
    (``POOL_SIZE``)."""
    max_overflow: int | None = Field(default=None, ge=0)
    """Extra connections a ``queue`` pool may open under load and close again (default 0);
    dropped like ``size`` under AWS Lambda (``MAX_OVERFLOW``)."""
    timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for a free connection before giving up (``POOL_TIMEOUT``)."""
    recycle: int = Field(default=1800, ge=-1)
    """Seconds after which a pooled connection is replaced; -1 never replaces
    (``POOL_RECYCLE``)."""
    pre_ping: bool = False
    """Test each connection with a round trip when it leaves the pool (``PRE_PING``)."""

    # A check of one field that needs another reads it from info.data, which holds the fields
    # above it that were valid: a field missing from it has an error of its own already.
    @field_validator("size", "max_overflow")
    @classmethod
    def _check_sizing(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None or "kind" not in info.data:
            return value
        kind = info.data["kind"]
        if kind is None and on_lambda():
            # The environment chose a null pool: sizing meant for a server is dropped (the
            # settings say so in one log line at load), so one configuration serves both.
            return None
        if kind == "null":
            raise ValueError(
                "cannot be set when the pool is null (a null pool keeps no connections)"
            )
        if info.field_name == "size" and value == 0:
            raise ValueError(
                "must be at least 1 for a queue pool, which reads POOL_SIZE=0 as no limit "
                "(POOL=null pools none)"
            )
        return value

    @property
    def effective_kind(self) -> PoolKind:
        """The pool kind in force: the configured one, else ``null`` on Lambda, else ``queue``."""
        if self.kind is not None:
            return self.kind
        return "null" if on_lambda() else "queue"

    @property
    def effective_size(self) -> int:
        """Pool size in force (0 for a ``null`` pool)."""
        if self.effective_kind == "null":
            return 0
        return DEFAULT_POOL_SIZE if self.size is None else self.size

    @property
    def effective_max_overflow(self) -> int:
        """Overflow in force (0 for a ``null`` pool)."""
        if self.effective_kind == "null":
            return 0
        return DEFAULT_MAX_OVERFLOW if self.max_overflow is None else self.max_overflow


class TimeoutSettings(FrozenSettings):
    """Time limits: to connect, per statement on either side, for locks and idle transactions."""

    connect: float = Field(default=10.0, gt=0)
    """Seconds allowed to open a connection (``CONNECT_TIMEOUT``)."""
    command: float | None = Field(default=30.0, gt=0)
    """Client-side limit in seconds for one statement (asyncpg's ``command_timeout``,
    ``COMMAND_TIMEOUT``). Finite by default: without it a statement on a connection whose
    server went silent (a dropped link, a blackholed host) waits for ever, and nothing counts
    it as a failure."""
    statement: float | None = Field(default=None, gt=0)
    """Server-side limit in seconds for one statement (PostgreSQL's ``statement_timeout``,
    ``STATEMENT_TIMEOUT``)."""
    lock: float | None = Field(default=None, gt=0)
    """Server-side limit in seconds to wait for a lock (PostgreSQL's ``lock_timeout``,
    ``LOCK_TIMEOUT``)."""
    idle_in_transaction: float | None = Field(default=None, gt=0)
    """Seconds after which the server ends a session left idle inside a transaction
    (``IDLE_IN_TRANSACTION_SESSION_TIMEOUT``)."""


class RetrySettings(FrozenSettings):
    """Retries of work that is safe to retry, with exponential backoff and full jitter."""

    attempts: int = Field(default=3, ge=1)
    """Attempts (the first included) for work that is safe to retry: opening a connection, a
    read on the read-only path whose connection dropped, ``run_in_transaction``
    (``RETRY_ATTEMPTS``)."""
    base_delay: float = Field(default=0.05, ge=0)
    """Seconds of the first backoff; each further one doubles, with full jitter
    (``RETRY_BASE_DELAY``)."""
    max_delay: float = Field(default=1.0, ge=0)
    """Cap in seconds of one backoff, at least ``base_delay`` (``RETRY_MAX_DELAY``)."""

    @field_validator("max_delay")
    @classmethod
    def _check_delays(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("base_delay")
        if base is not None and value < base:
            raise ValueError(f"{value} is below RETRY_BASE_DELAY ({base})")
        return value


class BreakerSettings(FrozenSettings):
    """The circuit breaker on opening connections."""

    failure_threshold: int = Field(default=5, ge=1)
    """Consecutive connection failures that open the circuit breaker
    (``BREAKER_FAILURE_THRESHOLD``)."""
    cool_down: float = Field(default=5.0, gt=0)
    """Seconds the breaker stays open (failing fast) before it lets one probe through
    (``BREAKER_COOL_DOWN``)."""


class ReplicaSettings(FrozenSettings):
    """Streaming replicas that serve reads, how reads are spread over them, and their checks."""

    urls: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Replica URLs, comma-separated or a JSON list (``REPLICAS``). A part a replica URL leaves
    out (user, password, database name, port) is the database's own."""
    weights: Annotated[tuple[int, ...] | None, NoDecode] = None
    """Share of plain reads per replica, in the order of ``urls`` (default: all 1;
    ``REPLICA_WEIGHTS``)."""
    pool_size: int | None = Field(default=None, ge=1)
    """Pool size of each replica's engine (default: the database's ``pool.size``;
    ``REPLICA_POOL_SIZE``)."""
    max_overflow: int | None = Field(default=None, ge=0)
    """Overflow of each replica's engine (default: the database's ``pool.max_overflow``;
    ``REPLICA_MAX_OVERFLOW``)."""
    max_lag: float = Field(default=30.0, gt=0)
    """Seconds of replay lag after which a replica is taken out of rotation
    (``MAX_REPLICA_LAG``)."""
    check_interval: float = Field(default=2.0, gt=0)
    """Seconds between background checks of each replica (health, lag, replay position;
    ``REPLICA_CHECK_INTERVAL``)."""

    @field_validator("urls", "weights", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # Environment values arrive as text: a JSON list, or items separated by commas.
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError("not a valid JSON list") from None
        return [item.strip() for item in text.split(",") if item.strip()]

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        # Each on its own here; with the database's own parts filled in, by DatabaseSettings.
        for index, replica in enumerate(urls, 1):
            try:
                url = parse_url(replica.get_secret_value())
                # A replica without TLS parameters takes the database's, checked with its URL.
                check_tls(tls_parameters(url.query))
            except ValueError as exc:
                raise ValueError(f"replica {index}: {exc}") from None
        return urls

    @field_validator("weights")
    @classmethod
    def _check_weights(
        cls, weights: tuple[int, ...] | None, info: ValidationInfo
    ) -> tuple[int, ...] | None:
        if weights is None:
            return None
        if any(weight < 1 for weight in weights):
            raise ValueError("every weight must be at least 1")
        urls = info.data.get("urls")
        if urls is not None and len(weights) != len(urls):
            raise ValueError(
                f"{len(weights)} weight(s) for {len(urls)} replica(s); give one per replica"
            )
        return weights

    def __bool__(self) -> bool:
        """Whether there are replicas: ``if settings.replicas:`` reads as it did when
        ``replicas`` was the tuple of URLs (a model would otherwise always be true)."""
        return bool(self.urls)

    @property
    def effective_weights(self) -> tuple[int, ...]:
        """The weights in force (1 each unless ``weights`` says otherwise)."""
        if self.weights is not None:
            return self.weights
        return tuple(1 for _ in self.urls)


class ObservabilitySettings(FrozenSettings):
    """What the database's statements and connections show of themselves."""

    slow_query_seconds: float | None = Field(default=None, gt=0)
    """Log statements that take at least this long, without their parameter values
    (``SLOW_QUERY_SECONDS``)."""
    tag_requests: bool = False
    """Under a request id, tag each connection's ``application_name`` with it before its first
    statement for the request, so ``pg_stat_activity`` shows which request runs a query
    (``TAG_REQUESTS``). Off by default: the extra round trip per request cost 15-20% of the
    catalog's read throughput in ``make bench`` (the ``tagged`` line)."""


class PoolerSettings(FrozenSettings):
    """A connection pooler between asyncdal and the server."""

    transaction_mode: bool = False
    """A transaction-mode pooler (PgBouncer, Supavisor, RDS Proxy) is in front: no statement
    caches, unique prepared-statement names, and ``statement_timeout`` set per transaction
    (``PGBOUNCER``)."""


class SafetySettings(FrozenSettings):
    """Safety nets: lazy loads, N+1 patterns, connections held too long, deadlines (see the
    guide's "Safety nets" page)."""

    lazy_loads: Literal["raise", "warn", "allow"] = "raise"
    """What a lazy load that would run a statement does (``LAZY_LOADS``): ``raise`` a
    :class:`~asyncdal.errors.LazyLoadError` naming the attribute and the loader option that
    avoids it; ``warn`` log that on ``asyncdal.lazy_loads`` and let an awaited load
    (``awaitable_attrs``) go on; ``allow`` leave SQLAlchemy's behaviour alone."""
    max_queries_per_request: int | None = Field(default=None, ge=1)
    """Log one warning on ``asyncdal.queries`` for a request that runs more statements than
    this, naming its route and the statement it repeated most (``MAX_QUERIES_PER_REQUEST``)."""
    leak_detection_seconds: float | None = Field(default=None, gt=0)
    """Log one warning on ``asyncdal.leaks`` for a connection checked out longer than this,
    with where it was checked out (``LEAK_DETECTION_SECONDS``)."""
    idle_hold_seconds: float | None = Field(default=None, gt=0)
    """Log one warning on ``asyncdal.leaks`` when a checked-out connection waits longer than
    this between statements: other work (an HTTP call) done while holding it
    (``IDLE_HOLD_SECONDS``)."""
    request_timeout: float | None = Field(default=None, gt=0)
    """A deadline for all of a FastAPI request's database work, as
    :func:`asyncdal.deadline` gives one (``REQUEST_TIMEOUT``); past it the answer is 504."""


GROUPS: Mapping[str, type[FrozenSettings]] = {
    "pool": PoolSettings,
    "timeouts": TimeoutSettings,
    "retry": RetrySettings,
    "breaker": BreakerSettings,
    "replicas": ReplicaSettings,
    "observability": ObservabilitySettings,
    "pooler": PoolerSettings,
    "safety": SafetySettings,
}
"""Each group of ``DatabaseSettings``, by field name, and its model."""
