"""The settings of one named database: connection, pool, timeouts, retries, replicas.

Every value is checked on its own when the settings are made, so that one load reports every
problem at once; what needs two values (a pool size and the pool kind, the URL and the parts
that override it) is checked as soon as both are known.

Example:
    >>> settings = DatabaseSettings(url="postgresql://app:s3cret@db.internal/catalog")
    >>> settings.safe_url
    'postgresql+asyncpg://app:***@db.internal/catalog'
"""

from __future__ import annotations

import json
import logging
import os
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode
from sqlalchemy.engine import URL, make_url

from asyncdal.settings._tls import TLS_PARAMETERS, check_tls, tls_dsn, tls_parameters
from asyncdal.settings._url import DRIVER, parse_url

__all__ = [
    "DEFAULT_MAX_OVERFLOW",
    "DEFAULT_POOL_SIZE",
    "LAMBDA_MARKER",
    "SIZING_FIELDS",
    "DatabaseSettings",
    "PoolKind",
    "on_lambda",
]

logger = logging.getLogger("asyncdal.settings")

PoolKind = Literal["queue", "null"]
"""``queue`` (a pool, for servers) or ``null`` (a connection per use: Lambda, scripts)."""

# A fixed-size pool by default: overflow connections are opened under load and closed again as
# soon as the pool is full, and that churn cost a third of the throughput in `make bench`.
DEFAULT_POOL_SIZE = 10
"""Connections a ``queue`` pool keeps open when ``POOL_SIZE`` is not set."""
DEFAULT_MAX_OVERFLOW = 0
"""Extra connections a ``queue`` pool may open when ``MAX_OVERFLOW`` is not set."""
SIZING_FIELDS = ("pool_size", "max_overflow", "replica_pool_size", "replica_max_overflow")
"""The fields that size a ``queue`` pool, which a null pool has no use for."""
LAMBDA_MARKER = "AWS_LAMBDA_FUNCTION_NAME"
"""Set in AWS Lambda, where an unset ``POOL`` means ``null``."""


def on_lambda() -> bool:
    """Whether this process runs in AWS Lambda (``AWS_LAMBDA_FUNCTION_NAME`` is set)."""
    return bool(os.environ.get(LAMBDA_MARKER))


class DatabaseSettings(BaseModel):
    """Connection and pool settings of one named database.

    Either ``url`` or ``host`` must be given; the parts (``host``, ``port``, ``user``,
    ``password``, ``name``) override the matching part of ``url`` when both are set, so a URL
    without a password can be combined with a password from a secret store.
    """

    # No input in error messages: it would show the URL, password and all.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Before ``url``, so that the URL's check can tell "missing" from "given as parts".
    host: str | None = None
    """Server host name, address, or a directory holding the Unix socket."""
    url: Annotated[SecretStr | None, Field(validate_default=True)] = None
    """Full database URL; ``postgresql://`` is accepted and driven by asyncpg. Its TLS
    parameters are libpq's (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ``sslcrl``,
    ``sslpassword``, ``sslnegotiation``, ``ssl_min_protocol_version``,
    ``ssl_max_protocol_version``), with libpq's rules; ``host`` and ``port`` may be parameters
    too (Unix sockets, several hosts)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Server port."""
    user: str | None = None
    """Role to connect as."""
    password: SecretStr | None = None
    """Password of ``user``; never shown in logs, reprs or errors."""
    name: str | None = None
    """Database name on the server."""
    pool: PoolKind | None = None
    """``queue`` (a pool for servers) or ``null`` (no pooling: Lambda, scripts, migrations).
    Unset means ``null`` under AWS Lambda and ``queue`` everywhere else."""
    pool_size: int | None = Field(default=None, ge=0)
    """Connections kept open by a ``queue`` pool (default 10). Under AWS Lambda with ``POOL``
    unset it is dropped (the pool is null there), so one configuration serves both."""
    max_overflow: int | None = Field(default=None, ge=0)
    """Extra connections a ``queue`` pool may open under load and close again (default 0);
    dropped like ``pool_size`` under AWS Lambda."""
    pool_timeout: float = Field(default=30.0, gt=0)
    """Seconds to wait for a free connection before giving up."""
    pool_recycle: int = Field(default=1800, ge=-1)
    """Seconds after which a pooled connection is replaced; -1 never replaces."""
    pre_ping: bool = False
    """Test each connection with a round trip when it leaves the pool."""
    connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds allowed to open a connection."""
    command_timeout: float | None = Field(default=30.0, gt=0)
    """Client-side limit in seconds for one statement (asyncpg's ``command_timeout``). Finite
    by default: without it a statement on a connection whose server went silent (a dropped
    link, a blackholed host) waits for ever, and nothing counts it as a failure."""
    statement_timeout: float | None = Field(default=None, gt=0)
    """Server-side limit in seconds for one statement (PostgreSQL's ``statement_timeout``)."""
    lock_timeout: float | None = Field(default=None, gt=0)
    """Server-side limit in seconds to wait for a lock (PostgreSQL's ``lock_timeout``)."""
    idle_in_transaction_session_timeout: float | None = Field(default=None, gt=0)
    """Seconds after which the server ends a session left idle inside a transaction."""
    retry_attempts: int = Field(default=3, ge=1)
    """Attempts (the first included) for work that is safe to retry: opening a connection, a
    read on the read-only path whose connection dropped, ``run_in_transaction``."""
    retry_base_delay: float = Field(default=0.05, ge=0)
    """Seconds of the first backoff; each further one doubles, with full jitter."""
    retry_max_delay: float = Field(default=1.0, ge=0)
    """Cap in seconds of one backoff."""
    breaker_failure_threshold: int = Field(default=5, ge=1)
    """Consecutive connection failures that open the circuit breaker."""
    breaker_cool_down: float = Field(default=5.0, gt=0)
    """Seconds the breaker stays open (failing fast) before it lets one probe through."""
    application_name: str = "asyncdal"
    """Shown in ``pg_stat_activity.application_name``."""
    optional: bool = False
    """When down, readiness reports ``degraded`` instead of failing."""
    slow_query_seconds: float | None = Field(default=None, gt=0)
    """Log statements that take at least this long (without their parameter values)."""
    tag_requests: bool = False
    """Under a request id, tag each connection's ``application_name`` with it before its first
    statement for the request, so ``pg_stat_activity`` shows which request runs a query. Off by
    default: the extra round trip per request cost 15-20% of the catalog's read throughput in
    ``make bench`` (the ``tagged`` line)."""
    pgbouncer: bool = False
    """A transaction-mode pooler (PgBouncer, Supavisor, RDS Proxy) is in front: no statement
    caches, unique prepared-statement names, and ``statement_timeout`` set per transaction."""
    replicas: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    """Streaming replicas that serve reads: URLs, comma-separated or a JSON list. A part a
    replica URL leaves out (user, password, database name, port) is this database's own."""
    replica_weights: Annotated[tuple[int, ...] | None, NoDecode] = None
    """Share of plain reads per replica, in the order of ``replicas`` (default: all 1)."""
    replica_pool_size: int | None = Field(default=None, ge=1)
    """Pool size of each replica's engine (default: this database's ``pool_size``)."""
    replica_max_overflow: int | None = Field(default=None, ge=0)
    """Overflow of each replica's engine (default: this database's ``max_overflow``)."""
    max_replica_lag: float = Field(default=30.0, gt=0)
    """Seconds of replay lag after which a replica is taken out of rotation."""
    replica_check_interval: float = Field(default=2.0, gt=0)
    """Seconds between background checks of each replica (health, lag, replay position)."""
    strict_budget: bool = False
    """Refuse to start when the pools of every engine on this database's server, times the
    worker processes, exceed the server's connection limit (default: only warn)."""

    @field_validator("replicas", "replica_weights", mode="before")
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

    # Checks of one field that need another read it from info.data, which holds the fields
    # above it that were valid: a field missing from it has an error of its own already.

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if url is None:
            if "host" in info.data and info.data["host"] is None:
                raise ValueError("missing (set the URL, or HOST with PORT, USER, PASSWORD, NAME)")
            return None
        parsed = parse_url(url.get_secret_value())
        check_tls(tls_parameters(parsed.query))
        return url

    @field_validator(*SIZING_FIELDS)
    @classmethod
    def _check_sizing(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None or "pool" not in info.data:
            return value
        pool = info.data["pool"]
        if pool is None and on_lambda():
            # The environment chose a null pool: sizing meant for a server is dropped (the
            # settings say so in one log line at load), so one configuration serves both.
            return None
        if pool == "null" and info.field_name in {"pool_size", "max_overflow"}:
            raise ValueError(
                "cannot be set when the pool is null (a null pool keeps no connections)"
            )
        if info.field_name == "pool_size" and value == 0:
            raise ValueError(
                "must be at least 1 for a queue pool, which reads POOL_SIZE=0 as no limit "
                "(POOL=null pools none)"
            )
        return value

    @field_validator("retry_max_delay")
    @classmethod
    def _check_retry_delays(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("retry_base_delay")
        if base is not None and value < base:
            raise ValueError(f"{value} is below RETRY_BASE_DELAY ({base})")
        return value

    @field_validator("replicas")
    @classmethod
    def _check_replicas(cls, replicas: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for index, replica in enumerate(replicas, 1):
            try:
                url = parse_url(replica.get_secret_value())
                # A replica without TLS parameters takes the database's, checked with its URL.
                check_tls(tls_parameters(url.query))
            except ValueError as exc:
                raise ValueError(f"replica {index}: {exc}") from None
        return replicas

    @field_validator("replica_weights")
    @classmethod
    def _check_weights(
        cls, weights: tuple[int, ...] | None, info: ValidationInfo
    ) -> tuple[int, ...] | None:
        if weights is None:
            return None
        if any(weight < 1 for weight in weights):
            raise ValueError("every weight must be at least 1")
        replicas = info.data.get("replicas")
        if replicas is not None and len(weights) != len(replicas):
            raise ValueError(
                f"{len(weights)} weight(s) for {len(replicas)} replica(s); give one per replica"
            )
        return weights

    # Model-level messages start with "FIELD: " so that load_settings can name the variable.
    @model_validator(mode="after")
    def _check(self) -> DatabaseSettings:
        # Each URL checked as its engine will use it: with the parts that override it put in.
        try:
            self.sqlalchemy_url()
        except ValueError as exc:
            raise ValueError(f"URL: {exc}") from None
        for index, replica in enumerate(self.replicas, 1):
            try:
                self._replica_settings(replica).sqlalchemy_url()
            except ValueError as exc:
                raise ValueError(f"REPLICAS: replica {index}: {exc}") from None
        return self

    @property
    def pool_class(self) -> PoolKind:
        """The pool kind in force: the configured one, else ``null`` on Lambda, else ``queue``."""
        if self.pool is not None:
            return self.pool
        return "null" if on_lambda() else "queue"

    @property
    def effective_pool_size(self) -> int:
        """Pool size in force (0 for a ``null`` pool)."""
        if self.pool_class == "null":
            return 0
        return DEFAULT_POOL_SIZE if self.pool_size is None else self.pool_size

    @property
    def effective_max_overflow(self) -> int:
        """Overflow in force (0 for a ``null`` pool)."""
        if self.pool_class == "null":
            return 0
        return DEFAULT_MAX_OVERFLOW if self.max_overflow is None else self.max_overflow

    def with_null_pool(self, *, log: bool = True) -> DatabaseSettings:
        """These settings on a null pool (a connection per use), without the pool sizes a
        null pool has no use for: for scripts, one-off commands and migrations.

        Example:
            >>> engine = create_engine(load_settings().databases["main"].with_null_pool())

        Args:
            log: say in one INFO line which sizes are dropped. Off for connections of
                asyncdal's own (a probe), where the line would only puzzle.

        Returns:
            New, validated settings; everything but the pool and its sizing is kept.
        """
        dropped = [field.upper() for field in SIZING_FIELDS if getattr(self, field) is not None]
        if dropped and log:
            logger.info(
                "%s not used: a null pool keeps no connections (with_null_pool)",
                ", ".join(dropped),
            )
        kept = {
            field: getattr(self, field)
            for field in self.model_fields_set - {"pool", *SIZING_FIELDS}
        }
        return type(self).model_validate({**kept, "pool": "null"})

    def sqlalchemy_url(self) -> URL:
        """The ``postgresql+asyncpg`` URL, built with ``URL.create`` so any password works.

        TLS parameters are taken out of it (:meth:`tls_arguments` hands them to asyncpg);
        ``host`` and ``port`` stay (Unix sockets, several hosts). Any other query parameter
        is refused, as asyncpg would fail on it at the first connection.

        Raises:
            ValueError: the URL cannot be parsed or is not a PostgreSQL URL. The message
                never repeats the URL, which may hold a password.
        """
        given = self.url
        base = URL.create(DRIVER) if given is None else parse_url(given.get_secret_value())
        url = base.set(
            drivername=DRIVER,
            host=self.host if self.host is not None else base.host,
            port=self.port if self.port is not None else base.port,
            username=self.user if self.user is not None else base.username,
            password=(
                self.password.get_secret_value() if self.password is not None else base.password
            ),
            database=self.name if self.name is not None else base.database,
        )
        if url.host is not None and "@" in url.host:
            raise ValueError("the host contains '@': percent-encode the password (%40)")
        return url.difference_update_query(TLS_PARAMETERS)

    def tls_arguments(self) -> dict[str, str]:
        """asyncpg ``connect()`` arguments carrying the URL's TLS parameters.

        They go to asyncpg as they are, as the query of a DSN with nothing else in it, so
        that asyncpg applies libpq's rules (see :mod:`asyncdal.settings._tls`); asyncpg takes
        everything else from its other arguments.

        Example:
            >>> DatabaseSettings(url="postgresql://db/shop?sslmode=require").tls_arguments()
            {'dsn': 'postgresql://?sslmode=require'}

        Returns:
            ``{"dsn": ...}``, or nothing when the URL has no TLS parameters (asyncpg's
            defaults then apply: ``PGSSLMODE``, else ``prefer``).
        """
        if self.url is None:
            return {}
        parameters = tls_parameters(make_url(self.url.get_secret_value()).query)
        return {"dsn": tls_dsn(parameters)} if parameters else {}

    def _replica_url(self, replica: SecretStr) -> SecretStr:
        """A replica's full URL: the parts it leaves out are this database's own."""
        given = parse_url(replica.get_secret_value())
        own = self.sqlalchemy_url()
        full = given.set(
            drivername=DRIVER,
            username=given.username if given.username is not None else own.username,
            password=given.password if given.password is not None else own.password,
            port=given.port if given.port is not None else own.port,
            database=given.database if given.database is not None else own.database,
        )
        if self.url is not None and not TLS_PARAMETERS & set(given.query):
            # A replica without TLS parameters of its own connects like the primary does:
            # never silently without TLS when the primary requires it.
            primary_tls = {
                key: value
                for key, value in make_url(self.url.get_secret_value()).query.items()
                if key in TLS_PARAMETERS
            }
            full = full.update_query_dict(primary_tls)
        return SecretStr(full.render_as_string(hide_password=False))

    def _replica_settings(self, replica: SecretStr) -> DatabaseSettings:
        update: dict[str, Any] = {
            "url": self._replica_url(replica),
            "host": None,
            "port": None,
            "user": None,
            "password": None,
            "name": None,
            "replicas": (),
            "replica_weights": None,
        }
        if self.replica_pool_size is not None:
            update["pool_size"] = self.replica_pool_size
        if self.replica_max_overflow is not None:
            update["max_overflow"] = self.replica_max_overflow
        return self.model_copy(update=update)

    def replica_settings(self) -> list[DatabaseSettings]:
        """Settings of each replica: its URL (TLS parameters, when it has none, the primary's),
        the replica pool sizes, and otherwise this database's own settings (timeouts, pooler
        mode, application name)."""
        return [self._replica_settings(replica) for replica in self.replicas]

    @property
    def weights(self) -> tuple[int, ...]:
        """The replica weights in force (1 each unless ``replica_weights`` says otherwise)."""
        if self.replica_weights is not None:
            return self.replica_weights
        return tuple(1 for _ in self.replicas)

    @property
    def safe_url(self) -> str:
        """The URL with its password masked, fit for logs and health output."""
        return self.sqlalchemy_url().render_as_string(hide_password=True)
